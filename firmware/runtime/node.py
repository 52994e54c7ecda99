"""One boot of the node: the cycle that samples, uploads and sleeps, for years, with nobody at the REPL.

One cycle: feed the watchdog; sample the sensors when due and record() the values to flash; when an upload
is due (every N samples or T seconds, the first cycle after a cold boot, or to rotate the secret in time)
bring up Wi-Fi (bounded retries with backoff), set the clock (NTP, retried; otherwise the agent learns the
server's Date and the RTC is set from it), onboard / configure / token, flush; then sleep until the next
thing is due: awake, or in deep sleep with the schedule saved on flash (RTC memory holds a copy, as a hint).
A sleep never runs past the point where the agent must rotate its secret: a node must not lock itself out.
Once per cold boot and daily a health event reports reset cause, lowest free heap, dropped readings,
retries and firmware version. An unexpected exception goes to a small ring log on flash; the node backs
off and carries on - it never crash-loops.

Heap: this module keeps the node's state and what every phase shares; the code of each phase lives in its
own module: runtime.wake (boot), runtime.cycle (the order of a cycle around its upload, and the rest between
cycles), runtime.sampling, runtime.schedule (what is due, how long to sleep), runtime.health,
runtime.upload, runtime.wifi, runtime.timesync. A phase module is imported when its phase starts; cycle,
sampling and schedule are released before an upload and the upload's module after it, so the upload - the
wake's heap peak - holds little more than the agent's data path.
"""

from micropython import const

from mcagent import compat
from mcagent.clock import SANE_AFTER_S, Clock, iso_ms
from runtime import path
from runtime.hw import MARKS

NODE_DIR = "node"  # the runtime's own state (schedule, counters), apart from the agent's
ERR_CAP_MS = const(3600000)
_ERR_BASE_MS = const(5000)
STAT_KEYS = ("taken", "recorded", "sent", "uploads", "rotations", "dropped", "store_dropped")
PERIOD_KEYS = ("retries", "errors", "sensor_errors")
_PHASES = const(("runtime.schedule", "runtime.sampling", "runtime.cycle"))  # released before an upload


class SensorSlot:
    """A sensor of the board (its node.json entry: kind, name, spec, points), its driver while one is made,
    and whether its failure was already reported this boot."""

    def __init__(self, spec):
        self.spec = spec
        self.driver = None
        self.failed = False


def _part(name):
    """A phase module of the runtime (runtime.<name>), imported on first use and kept until released."""
    return compat.load("runtime." + name)


class Node:
    """One boot of the node. `st` is what survives a reset or deep sleep (saved on flash)."""

    def __init__(self, board, settings, hw, agent_factory=None, log=None, stop=None, root=""):
        self.root = root.rstrip("/") if root else ""
        self.board = board
        self.settings = settings
        self.hw = hw
        self.agent_factory = agent_factory  # None: runtime.wake.default_agent
        self.printer = log
        self.stop = stop
        self.clock = Clock(hw.time)
        self.cause = compat.call_cold("runtime.hwcold", "reset_cause", hw)
        self.cold = self.cause != "DEEPSLEEP_RESET"
        self.agent = None
        self.state = None
        self.st = None
        self.sensors = []  # a SensorSlot per sensor
        self.pending = []  # [ts_ms, values] sampled while the clock was unknown
        self.cycles = 0
        self.last_values = None
        self.last_ts = None
        self.secret = (None, None)
        self.ref = None
        self.timer = None
        self.wlan = None
        self.configured = False
        self.boot_upload = self.cold
        self.health_boot = self.cold
        self.logged = 0  # run-log entries this boot
        self.asked = False  # this wake leaves its upload to the next (runtime.cycle.start)

    def path(self, name):
        """A file of the node: relative names live in root (the flash root on a board)."""
        return path(self.root, name)

    # ---- logging ------------------------------------------------------------------------------------------

    def log(self, msg):
        if self.printer is not None:
            self.printer(msg)
        else:
            ms = self.clock.now_ms()
            print("[node %s] %s" % (iso_ms(ms)[11:19] if ms // 1000 >= SANE_AFTER_S else "--:--:--", msg))

    def unexpected(self, exc, where):
        """An exception nobody planned for: ring log on flash, counter, one line on the console."""
        self.st["errors"] += 1
        compat.heap_free()
        stamp = iso_ms(self.clock.now_ms()) if self.clock.is_sane() else "boot%d" % self.st["boots"]
        text = self.note(where, exc, stamp)
        self.log("unexpected error in %s: %s" % (where, text))

    def note(self, where, exc, stamp=None):
        """One line in the ring log on flash (mcagent.runlog, loaded for the moment); the text of exc."""
        from mcagent import runlog

        text = runlog.describe(exc)
        try:
            log = runlog.RunLog(self.path(self.settings.runlog), written=self.logged)
            log.add("%s: %s" % (where, text), stamp)
            self.logged = log.written  # the per-boot cap holds: a repeated fault wears no flash
        finally:
            runlog = None
            compat.unload("mcagent.runlog")
        return text

    # ---- boot ---------------------------------------------------------------------------------------------

    def boot(self):
        """Load state, make the agent, start the watchdog, set up sensors (runtime.wake). Config errors raise
        before the watchdog starts, so a node with a wrong file waits at the REPL instead of resetting."""
        compat.call_cold("runtime.wake", "boot", self)

    def save_state(self):
        """Schedule and counters to flash (atomic), with a copy in RTC memory. Never raises."""
        st = self.st
        st["seq"] += 1
        st["saved_ms"] = self.clock.now_ms()
        try:
            self.state.save("state", st)
        except Exception as e:  # flash full, MemoryError: the RTC copy still carries the schedule
            self.log("state not saved (%r); RTC memory keeps a copy" % (e,))
        try:
            from mcagent.state import encode

            data = MARKS[1 if self.asked else 0] + encode(st)  # 1: an upload asked of the next wake
            if len(data) <= 2000:
                self.hw.set_rtc_memory(data)
        except Exception:
            pass

    def agent_config(self):
        """The agent's configuration from agentconfig.json, read when the agent first needs it (on a wake
        from deep sleep: one that only samples never parses it; runtime.wake.default_agent)."""
        return compat.call_cold("mcagent.config", "load", self.path(self.settings.agentconfig))

    def dsc(self):
        """The DSC of node.json: held by the board config, or read again from flash (runtime.wake)."""
        d = self.board.dsc
        if d is None:
            d = compat.call_cold("runtime.nodecfg", "part", self.board.node_json, "dsc")
        return d

    def release_phases(self):
        """Let the GC have the code of the cycle, sampling and scheduling, and the agent's append code
        (Agent.commit), until they are needed again: done before an upload, the heap peak of a wake (a
        node that deep-sleeps dropped its sensor drivers after sampling)."""
        for name in _PHASES:
            compat.unload(name)
        commit = getattr(self.agent, "commit", None)
        if commit is not None:
            commit()

    # ---- time ---------------------------------------------------------------------------------------------

    def settle(self):
        """Notice clock changes: move the schedule with them, record held samples once the time is known
        (runtime.schedule)."""
        _part("schedule").settle(self)

    def device_sane(self):
        return self.clock.device_ms() // 1000 >= SANE_AFTER_S

    def sync_clock(self):
        """NTP when the device clock is unset or due for a resync; True if the device clock is good
        (runtime.timesync: not loaded where there is no NTP to try)."""
        if self.hw.ntptime is None or not self.board.ntp_attempts:
            return self.device_sane()
        return compat.call_cold("runtime.timesync", "sync_clock", self)

    def adopt_learned_time(self):
        """The agent learned the time from the server while the device clock is unset: set the RTC."""
        if self.device_sane() or not self.clock.is_sane():
            return
        compat.call_cold("runtime.timesync", "adopt_learned_time", self)

    # ---- one cycle ----------------------------------------------------------------------------------------

    def step(self, up=None):
        """One cycle; ms to wait before the next. An exception costs a growing pause, never a crash.
        up: this boot began with an upload wake (runtime.upwake's result): the rest of its cycle
        (runtime.cycle.uploaded) instead."""
        if up is None:
            self.cycles += 1  # the upload wake's step ends the cycle its wake before began
        st = self.st
        try:
            ms = self.cycle() if up is None else _part("cycle").uploaded(self, up)
            st["err_row"] = 0
            return ms
        except Exception as e:
            # The streak is saved with the state: a node that deep-sleeps is a new Node every wake, and its
            # pauses must grow all the same.
            st["err_row"] += 1
            try:
                self.unexpected(e, "cycle")
                self.save_state()
            except Exception:  # e.g. MemoryError again: reporting must not end the node
                pass
            return min(ERR_CAP_MS, _ERR_BASE_MS << min(st["err_row"] - 1, 10))

    def cycle(self):
        """Sample, upload when due, then what is left (runtime.cycle): the cycle's code is released while
        the upload runs."""
        why = _part("cycle").start(self)
        if why:
            self.upload(why)
        return _part("cycle").end(self, why)

    def note_heap(self):
        free = self.hw.free_heap()
        if free is not None and (self.st["min_heap"] < 0 or free < self.st["min_heap"]):
            self.st["min_heap"] = free

    # ---- upload -------------------------------------------------------------------------------------------

    def upload(self, why):
        """Wi-Fi, clock, agent: onboard, configure, token (rotating the secret when due), flush
        (runtime.upload); then the schedule after it (done, or a retry with backoff). True if done."""
        self.release_phases()
        self.st["asked"] = ""  # a request left to an upload wake is done here (runtime.cycle.start)
        self.asked = False
        try:
            ok, err = _part("upload").upload(self, why)
        finally:
            compat.unload("runtime.upload")
        ok = _part("schedule").after_upload(self, ok, err, why)
        self.save_state()
        return ok

    def sleep(self, ms):
        """Rest until the next cycle (runtime.cycle): deep sleep does not return."""
        _part("cycle").sleep(self, ms)

    def wait(self, ms):
        """Stay awake for ms, feeding the watchdog."""
        hw = self.hw
        step = self.board.watchdog_ms // 3 if self.board.watchdog_ms else ms
        start = hw.ticks_ms()
        while True:
            hw.feed()
            left = ms - hw.ticks_diff(hw.ticks_ms(), start)
            if left <= 0:
                return
            hw.sleep_ms(min(left, step) if step > 0 else left)

    def finish(self):
        """Before stopping on purpose (the unix board's end of run): upload what is left, save."""
        _part("cycle").finish(self)
