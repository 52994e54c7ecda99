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

Heap: what a phase needs once (boot, Wi-Fi, NTP, the health event, the sensor drivers on a node that deep
sleeps) is imported for the phase and released after it (`compat.call_cold`), so the upload - the wake's peak - holds
little more than the agent's data path.
"""

from micropython import const

from mcagent import compat
from mcagent.clock import SANE_AFTER_S, Clock, iso_ms

NODE_DIR = "node"  # the runtime's own state (schedule, counters), apart from the agent's
_MAX_WAIT_MS = const(43200000)  # 12 h: wake at least this often (clock check, rotation window, ticks wrap)
_PENDING_MAX = const(24)  # samples held in RAM while the clock is unknown
_ROTATE_WINDOW_MAX_S = const(3600)  # wake at the latest this long before the secret expires
ERR_CAP_MS = const(3600000)
_ERR_BASE_MS = const(5000)
_RETRY_BASE_MS = const(30000)
_JUMP_MS = const(1500)  # a clock change larger than this moves the schedule with it
_SAVE_EVERY = const(10)  # awake mode: save the schedule every this many cycles (flash wear)
HINT_MAGIC = b"MCN1"
STAT_KEYS = ("taken", "recorded", "sent", "uploads", "rotations", "dropped", "store_dropped")
PERIOD_KEYS = ("retries", "errors", "sensor_errors")


def default_agent(node):
    """The real agent, sharing the node's clock (so both see the time the server taught)."""
    from mcagent import Agent

    s = node.settings
    ca = s.ca
    if ca is None:  # every certificate deploy installed
        import os

        try:
            ca = ["certs/" + n for n in sorted(os.listdir(node.path("certs"))) if n.endswith(".der")]
        except OSError:
            ca = []
    b = node.board
    return Agent(config=node.path(s.agentconfig), state=node.path(s.state_dir), ca=[node.path(c) for c in ca],
                 proxy=s.proxy, clock=node.clock, store=node.path("store"), dsc=b.dsc,
                 store_options=dict(b.store))


class Node:
    """One boot of the node. `st` is what survives a reset or deep sleep (saved on flash)."""

    def __init__(self, board, settings, hw, agent_factory=None, log=None, stop=None, root=""):
        self.root = root.rstrip("/") if root else ""
        self.board = board
        self.settings = settings
        self.hw = hw
        self.agent_factory = agent_factory or default_agent
        self.printer = log
        self.stop = stop
        self.clock = Clock(hw.time)
        self.cause = hw.reset_cause()
        self.cold = self.cause != "DEEPSLEEP_RESET"
        self.agent = None
        self.state = None
        self.st = None
        self.sensors = []  # [sensor (node.json entry), driver or None, failure already logged]
        self.pending = []  # [ts_ms, values] sampled while the clock was unknown
        self.errors_in_row = 0
        self.cycles = 0
        self.last_values = None
        self.last_ts = None
        self.secret = (None, None)
        self.ref = None
        self.deadline = None
        self.timer = None
        self.wlan = None
        self.configured = False
        self.boot_upload = self.cold
        self.health_boot = self.cold

    def path(self, name):
        """A file of the node: relative names live in root (the flash root on a board)."""
        if not self.root or name.startswith("/"):
            return name
        return self.root + "/" + name

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
            runlog.RunLog(self.path(self.settings.runlog)).add("%s: %s" % (where, text), stamp)
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

            data = HINT_MAGIC + encode(st)
            if len(data) <= 2000:
                self.hw.set_rtc_memory(data)
        except Exception:
            pass

    def init_sensor(self, entry):
        from sensors import module

        s = entry[0]
        try:
            entry[1] = module(s["kind"]).Driver(s["spec"], self.hw)
        except Exception as e:
            self.st["sensor_errors"] += 1
            self._sensor_failed(entry, e)
        return entry[1]

    def release_sensors(self):
        """Drop the drivers and their modules: a node that deep-sleeps samples once per wake, and the upload
        after the sample is the wake's heap peak (next cycle, init_sensor makes them again)."""
        for entry in self.sensors:
            if entry[1] is not None:
                entry[1] = None
                compat.unload("sensors." + entry[0]["kind"])

    def _sensor_failed(self, entry, exc):
        """Console once per boot; run log only after a cold boot (a dead sensor on a node that wakes every
        minute must not write the flash every minute). The health event carries the count."""
        if entry[2]:
            return
        entry[2] = True
        if self.cold:
            self.note("sensor " + entry[0]["name"], exc)
        self.log("sensor %s failed: %s" % (entry[0]["name"], exc))

    # ---- the watchdog -------------------------------------------------------------------------------------

    def tick(self, t):
        """Timer callback: feed the watchdog while a guarded step is within its budget."""
        d = self.deadline
        if d is not None and self.hw.ticks_diff(d, self.hw.ticks_ms()) > 0:
            self.hw.feed()

    def _guard(self, budget_ms):
        """From now on, for budget_ms, the timer keeps the watchdog fed through blocking calls (a stalled
        upload); past the budget it stops, and the watchdog resets a hung board."""
        self.hw.feed()
        self.deadline = self.hw.ticks_ms() + budget_ms

    def _unguard(self):
        self.deadline = None
        self.hw.feed()

    # ---- time ---------------------------------------------------------------------------------------------

    def settle(self):
        """Notice clock changes (NTP, a learned Date): move the schedule and held samples with them, and
        record held samples once the time is known."""
        t = self.hw.ticks_ms()
        c = self.clock.now_ms()
        if self.ref is not None:
            jump = (c - self.ref[1]) - self.hw.ticks_diff(t, self.ref[0])
            if jump > _JUMP_MS or jump < -_JUMP_MS:
                self._shift(jump)
        self.ref = (t, c)
        if self.pending and self.clock.is_sane():
            self._record_pending()

    def _shift(self, jump):
        st = self.st
        for k in ("next_sample_ms", "last_upload_ms", "retry_at_ms", "last_health_ms", "rot_check_ms", "ntp_ms"):
            if st[k]:
                st[k] += jump
        for p in self.pending:
            p[0] += jump
        self.log("clock moved by %d s" % (jump // 1000))

    def _record_pending(self):
        pending = self.pending
        self.pending = []
        for ts, values in pending:
            self.agent.record(values, timestamp_ms=ts)
            self.st["recorded"] += 1
        self.log("recorded %d samples taken before the clock was known" % len(pending))

    def device_sane(self):
        return self.clock.device_ms() // 1000 >= SANE_AFTER_S

    def device_sane(self):
        return self.clock.device_ms() // 1000 >= SANE_AFTER_S

    def sync_clock(self):
        """NTP when the device clock is unset or due for a resync; True if the device clock is good
        (runtime.timesync)."""
        return compat.call_cold("runtime.timesync", "sync_clock", self)

    def adopt_learned_time(self):
        """The agent learned the time from the server while the device clock is unset: set the RTC."""
        if self.device_sane() or not self.clock.is_sane():
            return
        compat.call_cold("runtime.timesync", "adopt_learned_time", self)

    def _read_secret(self):
        """(expires_at, rotation_due_at) in Unix seconds from the agent, (None, None) if unknown."""
        a = self.agent
        try:
            fn = getattr(a, "secret_expires_at", None)
            if fn is not None:
                exp = fn() if callable(fn) else fn
                due = getattr(a, "rotation_due_at", None)
                due = due() if callable(due) else due
            else:
                status = getattr(a, "status", None)
                if status is None:
                    return None, None
                s = status()
                exp = s.get("secret_expires_at")
                due = s.get("rotation_due_at")
        except Exception as e:  # status must never stop the node; without it the sleep cap is generic
            self.log("secret expiry unknown: %r" % (e,))
            return None, None
        if not exp:
            return None, None
        st = self.st
        now_s = self.clock.now_s()
        if st["secret_exp"] and exp != st["secret_exp"]:
            st["rotations"] += 1
            self.log("secret rotated; it now expires %s" % iso_ms(exp * 1000))
        if exp != st["secret_exp"]:
            st["secret_exp"] = exp
            st["life_s"] = max(0, exp - now_s)
        return exp, due

    def _rotate_at_ms(self):
        """When the node must be awake to let the agent rotate the secret, or None."""
        exp, due = self.secret
        if not exp:
            return None
        window = min(_ROTATE_WINDOW_MAX_S, max(1, self.st["life_s"] // 4))
        at = exp - window
        if due and due < at:
            at = due
        at *= 1000
        st = self.st
        if st["rot_check_ms"]:
            # The agent was asked since the due time and did not rotate: ask again, ever more often.
            gap = max(60000, (exp * 1000 - st["rot_check_ms"]) // 4)
            at = max(at, st["rot_check_ms"] + gap)
        return at

    # ---- one cycle ----------------------------------------------------------------------------------------

    def step(self):
        """One cycle; ms to wait before the next. An exception costs a growing pause, never a crash."""
        self.cycles += 1
        try:
            ms = self.cycle()
            self.errors_in_row = 0
            return ms
        except Exception as e:
            self.errors_in_row += 1
            try:
                self.unexpected(e, "cycle")
                self.save_state()
            except Exception:  # e.g. MemoryError again: reporting must not end the node
                pass
            return min(ERR_CAP_MS, _ERR_BASE_MS << min(self.errors_in_row - 1, 10))

    def cycle(self):
        hw = self.hw
        b = self.board
        st = self.st
        hw.feed()
        self.settle()
        self.secret = self._read_secret()
        now = self.clock.now_ms()
        if now >= st["next_sample_ms"]:
            self.sample(now)
            if b.sleep == "deep":
                self.release_sensors()
            nxt = st["next_sample_ms"] + b.sample_ms
            if nxt <= now:  # slots missed (a long upload, a clock jump): restart the grid from now
                nxt = now + b.sample_ms
            st["next_sample_ms"] = nxt
        if self._health_due(now):
            self.queue_health(now)
        why = self._upload_due(now)
        saved = False
        if why:
            self.upload(why)
            saved = True
        self.note_heap()
        st["crash"] = 0
        if not saved and (b.sleep != "deep") and self.cycles % _SAVE_EVERY == 0:
            self.save_state()
        return self.wait_ms()

    def sample(self, now):
        from sensors import convert

        values = {}
        st = self.st
        for entry in self.sensors:
            s, driver = entry[0], entry[1]
            if driver is None:
                driver = self.init_sensor(entry)
                if driver is None:
                    continue
            try:
                got = driver.read(now)
            except Exception as e:  # one broken sensor must not stop the others
                st["sensor_errors"] += 1
                self._sensor_failed(entry, e)
                continue
            for pid, channel, typ in s["points"]:
                v = got.get(channel)
                if v is None:
                    continue
                try:
                    values[pid] = convert(typ, v)
                except (TypeError, ValueError):
                    st["sensor_errors"] += 1
        if not values:
            return
        st["taken"] += 1
        st["samples"] += 1
        self.last_values = values
        self.last_ts = now
        if self.clock.is_sane():
            self.agent.record(values, timestamp_ms=now)
            st["recorded"] += 1
        else:
            self.pending.append([now, values])
            if len(self.pending) > _PENDING_MAX:
                self.pending.pop(0)
                st["dropped"] += 1

    def _health_due(self, now):
        if not self.clock.is_sane():
            return False
        return self.health_boot or now - self.st["last_health_ms"] >= self.board.health_ms

    def queue_health(self, now):
        """The health event (local: it leaves with the next upload; runtime.health)."""
        compat.call_cold("runtime.health", "queue_health", self, now)

    def note_heap(self):
        free = self.hw.free_heap()
        if free is not None and (self.st["min_heap"] < 0 or free < self.st["min_heap"]):
            self.st["min_heap"] = free

    def _upload_due(self, now):
        st = self.st
        b = self.board
        if self.boot_upload:
            return "boot"
        if now < st["retry_at_ms"]:
            return None
        if b.upload_samples and st["samples"] >= b.upload_samples:
            return "samples"
        if b.upload_ms and now - st["last_upload_ms"] >= b.upload_ms:
            return "period"
        if self.pending:
            return "clock"
        rot = self._rotate_at_ms()
        if rot is not None and now >= rot:
            return "secret"
        return None

    # ---- upload -------------------------------------------------------------------------------------------

    def upload(self, why):
        """Wi-Fi, clock, agent: onboard, configure, token (rotating the secret when due), flush."""
        b = self.board
        st = self.st
        self.boot_upload = False
        ok = False
        err = None
        self._guard(b.upload_budget_ms + b.wifi_attempts * (b.wifi_timeout_ms + b.wifi_backoff_ms) + 60000)
        try:
            if not self.wifi_up():
                err = "no Wi-Fi"
            else:
                self.sync_clock()
                agent = self.agent
                agent.onboard()
                self.hw.feed()
                self.adopt_learned_time()
                if not self.configured:
                    agent.configure(b.dsc)
                    self.configured = True
                    self.hw.feed()
                agent.token()
                self.hw.feed()
                self.adopt_learned_time()
                self.settle()
                summary = agent.flush()
                ok, err = self._account(summary)
        except OSError as e:  # network weather: transport errors, timeouts, DNS
            err = repr(e)
            if type(e).__name__ == "TlsVerifyError":  # not weather: a wrong CA or host; worth the run log
                self.unexpected(e, "upload")
        except Exception as e:
            self.unexpected(e, "upload")
            err = type(e).__name__
        finally:
            self._unguard()
        self.settle()
        now = self.clock.now_ms()
        self.secret = self._read_secret()
        if ok and self.pending:  # uploaded, yet still no time for the held samples: try again later
            ok = False
            err = "the time is still unknown (no NTP, no Date from the server)"
        if ok:
            st["last_upload_ms"] = now
            st["samples"] = 0
            st["fails"] = 0
            st["retry_at_ms"] = 0
            st["uploads"] += 1
            st["rot_check_ms"] = 0
            rot = self._rotate_at_ms()
            if rot is not None and now >= rot:  # asked while due, and the agent did not rotate: ask later
                st["rot_check_ms"] = now
            self.log("upload (%s) done" % why)
        else:
            st["fails"] += 1
            st["retries"] += 1
            wait = self._backoff_ms(st["fails"])
            exp = self.secret[0]
            if exp:  # tries get denser as the secret's expiry nears, never past it
                left = exp * 1000 - now
                if left > 0:
                    wait = min(wait, max(5000, left // 2))
            st["retry_at_ms"] = now + wait
            self.log("upload (%s) failed: %s; next try in %d s" % (why, err, wait // 1000))
        self.save_state()
        return ok

    def _backoff_ms(self, fails):
        """Exponential with jitter (50-100 %): nodes that lost the same access point do not return in step."""
        cap = self.board.retry_cap_ms
        wait = min(cap, _RETRY_BASE_MS << min(fails - 1, 16))
        r = compat.urandom(2)
        return wait // 2 + (wait // 2) * ((r[0] << 8) | r[1]) // 65535

    def _account(self, summary):
        st = self.st
        if not isinstance(summary, dict):
            return True, None
        st["sent"] += summary.get("readings_sent", 0) or 0
        st["retries"] += summary.get("retries", 0) or 0
        dropped = summary.get("dropped")
        if isinstance(dropped, int):
            st["store_dropped"] = dropped
        err = summary.get("error")
        return err is None, err

    def wifi_up(self):
        """Connect with bounded tries and backoff; True when up (or when the port needs no Wi-Fi)."""
        net = self.hw.network
        if net is None or not self.settings.ssid:
            return True
        if self.wlan is not None and self.wlan.isconnected():
            return True
        return compat.call_cold("runtime.wifi", "up", self)

    def wifi_off(self):
        if self.wlan is not None:
            try:
                self.wlan.active(False)
            except Exception:
                pass

    def wait_ms(self):
        """ms until the next thing is due: a sample, an upload (or its retry), the secret's rotation."""
        st = self.st
        b = self.board
        now = self.clock.now_ms()
        wake = st["next_sample_ms"]
        if b.upload_ms:
            wake = min(wake, max(st["last_upload_ms"] + b.upload_ms, st["retry_at_ms"]))
        if (b.upload_samples and st["samples"] >= b.upload_samples) or self.pending:
            wake = min(wake, max(st["retry_at_ms"], now))
        limit = _MAX_WAIT_MS
        rot = self._rotate_at_ms()
        if rot is not None:
            wake = min(wake, max(rot, st["retry_at_ms"]))
            exp_ms = self.secret[0] * 1000
            if exp_ms > now:
                # Hard cap: whatever else says, wake while at least half the time to expiry remains.
                limit = min(limit, max(1000, (exp_ms - now) // 2 if rot <= now else rot - now))
            if not self.clock.is_sane() and self.st["life_s"]:
                # The clock is not to be trusted (RTC reset, no NTP yet): "time to expiry" means nothing,
                # so wake at least four times per secret lifetime.
                limit = min(limit, max(1000, self.st["life_s"] * 250))
        return max(0, min(wake - now, limit))

    def sleep(self, ms):
        if ms <= 0:
            return
        if self.board.sleep == "deep" and ms >= self.board.min_deep_ms and not self.pending:
            self.deep_sleep(ms)
        self.wait(ms)

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

    def deep_sleep(self, ms):
        """Save everything, radio off, sleep; waking is a reboot that resumes from flash."""
        self.save_state()
        self.close()
        self.log("deep sleep %d ms" % ms)
        self.hw.deepsleep(ms)

    def close(self):
        self.wifi_off()
        close = getattr(self.agent, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass

    def finish(self):
        """Before stopping on purpose (the unix board's end of run): upload what is left, save."""
        if self.st["taken"] and (self.st["samples"] or self.pending):
            self.upload("final")
        else:
            self.save_state()
        self.close()

    def summary(self):
        st = self.st
        out = {"board": self.board.name, "boots": st["boots"], "wakes": st["wakes"]}
        for k in STAT_KEYS:
            out[k] = st[k]
        out["pending_clock"] = len(self.pending)
        out["last_ts"] = self.last_ts
        out["last_values"] = self.last_values
        return out
