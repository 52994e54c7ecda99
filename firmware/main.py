"""The sensor node: boot, measure, upload, sleep, come back - for years, with nobody at the REPL.

One cycle: feed the watchdog; sample the sensors when due and record() the values to flash; when an upload
is due (every N samples or T seconds, the first cycle after a cold boot, or to rotate the secret in time)
bring up Wi-Fi (bounded retries with backoff), set the clock (NTP, retried; otherwise the agent learns the
server's Date and the RTC is set from it), onboard / configure / token, flush; then sleep until the next
thing is due: awake, or in deep sleep with the schedule saved on flash (RTC memory holds a copy, as a hint).
A sleep never runs past the point where the agent must rotate its secret: a node must not lock itself out.
Once per cold boot and daily a health event reports reset cause, lowest free heap, dropped readings,
retries and firmware version. An unexpected exception goes to a small ring log on flash; the node backs
off and carries on - it never crash-loops.

Entry points: main() on a board or the unix stand-in; run(board=..., settings=..., hw=..., agent_factory=...)
for tests and tools (every board facility comes in through `hw`, the agent through `agent_factory`).
"""

import sys

from micropython import const

from mcagent import board as _board
from mcagent import compat
from mcagent.clock import SANE_AFTER_S, Clock, iso_ms
from mcagent.runlog import RunLog, describe

NODE_DIR = "node"  # the runtime's own state (schedule, counters), apart from the agent's
_MAX_WAIT_MS = const(43200000)  # 12 h: wake at least this often (clock check, rotation window, ticks wrap)
_PENDING_MAX = const(24)  # samples held in RAM while the clock is unknown
_ROTATE_WINDOW_MAX_S = const(3600)  # wake at the latest this long before the secret expires
_ERR_BASE_MS = const(5000)
_ERR_CAP_MS = const(3600000)
_RETRY_BASE_MS = const(30000)
_CRASH_STREAK = const(3)  # watchdog/brownout resets in a row before boots are spaced out
_JUMP_MS = const(1500)  # a clock change larger than this moves the schedule with it
_SAVE_EVERY = const(10)  # awake mode: save the schedule every this many cycles (flash wear)
_HINT_MAGIC = b"MCN1"
_CRASHY = ("WDT_RESET", "BROWNOUT_RESET")
_STAT_KEYS = ("taken", "recorded", "sent", "uploads", "rotations", "dropped", "store_dropped")
_PERIOD_KEYS = ("retries", "errors", "sensor_errors")


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
                 proxy=s.proxy, clock=node.clock, store=node.path("store"), dsc=b.dsc(),
                 store_options=b.store_options())


def _fresh_state(now):
    st = {"v": 1, "seq": 0, "boots": 0, "wakes": 0, "saved_ms": now, "next_sample_ms": now,
          "last_upload_ms": now, "retry_at_ms": 0, "fails": 0, "samples": 0, "last_health_ms": 0,
          "ntp_ms": 0, "rot_check_ms": 0, "secret_exp": 0, "life_s": 0, "crash": 0, "min_heap": -1}
    for k in _STAT_KEYS + _PERIOD_KEYS:
        st[k] = 0
    return st


class Node:
    """One boot of the node. `st` is what survives a reset or deep sleep (saved on flash)."""

    def __init__(self, board, settings, hw, agent_factory=None, log=None, stop=None, root=""):
        self.root = root.rstrip("/") if root else ""
        self.board = board
        self.settings = settings
        self.hw = hw
        self.agent_factory = agent_factory or default_agent
        self._log = log
        self.stop = stop
        self.clock = Clock(hw.time)
        self.runlog = RunLog(self.path(settings.runlog))
        self.cause = hw.reset_cause()
        self.cold = self.cause != "DEEPSLEEP_RESET"
        self.agent = None
        self.state = None
        self.st = None
        self.sensors = []  # [Sensor, driver or None, failure already logged]
        self.pending = []  # [ts_ms, values] sampled while the clock was unknown
        self.errors_in_row = 0
        self.cycles = 0
        self.last_values = None
        self.last_ts = None
        self._secret = (None, None)
        self._ref = None
        self._deadline = None
        self._timer = None
        self._wlan = None
        self._configured = False
        self._boot_upload = self.cold
        self._health_boot = self.cold

    def path(self, name):
        """A file of the node: relative names live in root (the flash root on a board)."""
        if not self.root or name.startswith("/"):
            return name
        return self.root + "/" + name

    # ---- logging ------------------------------------------------------------------------------------------

    def log(self, msg):
        if self._log is not None:
            self._log(msg)
        else:
            ms = self.clock.now_ms()
            print("[node %s] %s" % (iso_ms(ms)[11:19] if ms // 1000 >= SANE_AFTER_S else "--:--:--", msg))

    def unexpected(self, exc, where):
        """An exception nobody planned for: ring log on flash, counter, one line on the console."""
        self.st["errors"] += 1
        compat.heap_free()
        stamp = iso_ms(self.clock.now_ms()) if self.clock.is_sane() else "boot%d" % self.st["boots"]
        self.runlog.add("%s: %s" % (where, describe(exc)), stamp)
        self.log("unexpected error in %s: %s" % (where, describe(exc)))

    # ---- boot ---------------------------------------------------------------------------------------------

    def boot(self):
        """Load state, make the agent, start the watchdog, set up sensors. Config errors raise before the
        watchdog starts, so a node with a wrong file waits at the REPL instead of resetting forever."""
        from mcagent.state import State

        self.state = State(self.path(NODE_DIR))
        self.st = self._load_state()
        st = self.st
        st["boots"] += 1
        if not self.cold:
            st["wakes"] += 1
        if self.cause in _CRASHY:
            st["crash"] += 1
            self.save_state()  # count it even if this boot dies again before its first save
        elif self.cold:
            st["crash"] = 0
        self.agent = self.agent_factory(self)
        shared = getattr(self.agent, "clock", None)
        if shared is not None:
            self.clock = shared
        b = self.board
        if self.hw.start_watchdog(b.watchdog_ms):
            self._timer = self.hw.timer(max(1000, b.watchdog_ms // 4), self._tick)
        self._ref = (self.hw.ticks_ms(), self.clock.now_ms())
        for s in b.sensors:
            entry = [s, None, False]
            self.sensors.append(entry)
            self._init_sensor(entry)
        self.log("boot %d (%s) board %s, %d sensors, sleep %s" % (st["boots"], self.cause, b.name,
                                                                 len(b.sensors), b.sleep))
        if st["crash"] >= _CRASH_STREAK and self.cold:
            wait = min(_ERR_CAP_MS, 60000 << min(st["crash"] - _CRASH_STREAK, 6))
            self.log("%d resets in a row: waiting %d s before working" % (st["crash"], wait // 1000))
            self.save_state()
            self.sleep(wait)

    def _load_state(self):
        now = self.clock.now_ms()
        st = self.state.load("state")
        hint = self._read_hint()
        if hint is not None and (st is None or hint.get("seq", 0) > st.get("seq", 0)):
            st = hint  # flash missed the last save (full, or cut): the RTC copy is newer
        fresh = _fresh_state(now)
        if not isinstance(st, dict) or st.get("v") != 1:
            return fresh
        for k in fresh:
            if k not in st:
                st[k] = fresh[k]
        if st["saved_ms"] > now + 300000:
            # The clock went backwards (power loss reset the RTC): the saved times belong to another
            # timeline. Start the schedule afresh; counters stay.
            for k in ("next_sample_ms", "last_upload_ms", "retry_at_ms", "last_health_ms", "ntp_ms", "rot_check_ms"):
                st[k] = fresh[k]
        if self.cold:
            st["retry_at_ms"] = 0
        return st

    def _read_hint(self):
        try:
            data = self.hw.rtc_memory()
            if not data.startswith(_HINT_MAGIC):
                return None
            from mcagent.state import decode

            value = decode(bytes(data[len(_HINT_MAGIC):]))
            return value if isinstance(value, dict) else None
        except Exception:  # a hint is only a hint
            return None

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

            data = _HINT_MAGIC + encode(st)
            if len(data) <= 2000:
                self.hw.set_rtc_memory(data)
        except Exception:
            pass

    def _init_sensor(self, entry):
        from sensors import module

        s = entry[0]
        try:
            entry[1] = module(s.kind).Driver(s.spec, self.hw)
        except Exception as e:
            self.st["sensor_errors"] += 1
            self._sensor_failed(entry, e)
        return entry[1]

    def _sensor_failed(self, entry, exc):
        """Console once per boot; run log only after a cold boot (a dead sensor on a node that wakes every
        minute must not write the flash every minute). The health event carries the count."""
        if entry[2]:
            return
        entry[2] = True
        if self.cold:
            self.runlog.add("sensor %s: %s" % (entry[0].name, describe(exc)))
        self.log("sensor %s failed: %s" % (entry[0].name, exc))

    # ---- the watchdog -------------------------------------------------------------------------------------

    def _tick(self, t):
        """Timer callback: feed the watchdog while a guarded step is within its budget."""
        d = self._deadline
        if d is not None and self.hw.ticks_diff(d, self.hw.ticks_ms()) > 0:
            self.hw.feed()

    def _guard(self, budget_ms):
        """From now on, for budget_ms, the timer keeps the watchdog fed through blocking calls (a stalled
        upload); past the budget it stops, and the watchdog resets a hung board."""
        self.hw.feed()
        self._deadline = self.hw.ticks_ms() + budget_ms

    def _unguard(self):
        self._deadline = None
        self.hw.feed()

    # ---- time ---------------------------------------------------------------------------------------------

    def _settle(self):
        """Notice clock changes (NTP, a learned Date): move the schedule and held samples with them, and
        record held samples once the time is known."""
        t = self.hw.ticks_ms()
        c = self.clock.now_ms()
        if self._ref is not None:
            jump = (c - self._ref[1]) - self.hw.ticks_diff(t, self._ref[0])
            if jump > _JUMP_MS or jump < -_JUMP_MS:
                self._shift(jump)
        self._ref = (t, c)
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

    def _device_sane(self):
        return self.clock.device_ms() // 1000 >= SANE_AFTER_S

    def sync_clock(self):
        """NTP when the device clock is unset or due for a resync; True if the device clock is good.

        A network that blocks NTP costs its tries once per resync period, not once per upload: after a
        failure the server's Date sets the clock, and the device clock then counts as good until the resync.
        """
        ntp = self.hw.ntptime
        b = self.board
        st = self.st
        now = self.clock.now_ms()
        if self._device_sane() and st["ntp_ms"] and 0 <= now - st["ntp_ms"] < b.ntp_resync_ms:
            return True
        if ntp is None or not b.ntp_attempts:
            return self._device_sane()
        if self.settings.ntp_host:
            ntp.host = self.settings.ntp_host
        st["ntp_ms"] = now  # tried now: with a clock from the server, the next try waits for the resync time
        for i in range(b.ntp_attempts):
            self.hw.feed()
            try:
                ntp.settime()
            except Exception as e:  # OSError on timeout; ValueError/IndexError on a garbled answer
                st["retries"] += 1
                self.log("NTP try %d failed: %r" % (i + 1, e))
                if i + 1 < b.ntp_attempts:
                    self.wait(1000 * (i + 1))
                continue
            self.clock.correction_ms = 0  # the device clock is right now; a learned correction is void
            self._settle()
            st["ntp_ms"] = self.clock.now_ms()
            self.log("clock set by NTP: %s" % iso_ms(st["ntp_ms"]))
            return True
        self.log("NTP failed: the time comes from the server's Date")
        return self._device_sane()

    def _adopt_learned_time(self):
        """The agent learned the time from the server while the device clock is unset: set the RTC, so the
        time survives deep sleep and a correction never outlives the power cut that voids it."""
        if self._device_sane() or not self.clock.is_sane():
            return
        t = self.clock.now_ms()
        if self.hw.set_time(t // 1000):
            self.clock.correction_ms = 0
            self.clock.correction_ms = t - self.clock.device_ms()
            self._settle()
            self.log("RTC set from the server's time: %s" % iso_ms(t))

    # ---- the secret's deadline ----------------------------------------------------------------------------

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
        exp, due = self._secret
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
            return min(_ERR_CAP_MS, _ERR_BASE_MS << min(self.errors_in_row - 1, 10))

    def cycle(self):
        hw = self.hw
        b = self.board
        st = self.st
        hw.feed()
        self._settle()
        self._secret = self._read_secret()
        now = self.clock.now_ms()
        if now >= st["next_sample_ms"]:
            self.sample(now)
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
        self._note_heap()
        st["crash"] = 0
        if not saved and (b.sleep != "deep") and self.cycles % _SAVE_EVERY == 0:
            self.save_state()
        return self.wait_ms()

    def sample(self, now):
        values = {}
        st = self.st
        for entry in self.sensors:
            s, driver = entry[0], entry[1]
            if driver is None:
                driver = self._init_sensor(entry)
                if driver is None:
                    continue
            try:
                got = driver.read(now)
            except Exception as e:  # one broken sensor must not stop the others
                st["sensor_errors"] += 1
                self._sensor_failed(entry, e)
                continue
            for p in s.points:
                v = got.get(p.channel)
                if v is None:
                    continue
                try:
                    values[p.id] = p.convert(v)
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
        return self._health_boot or now - self.st["last_health_ms"] >= self.board.health_ms

    def queue_health(self, now):
        """The health event (local: it leaves with the next upload)."""
        from mcagent import VERSION

        st = self.st
        self._note_heap()
        details = {
            "reset_cause": self.cause,
            "boots": st["boots"],
            "wakes": st["wakes"],
            "min_free_heap": st["min_heap"],
            "dropped_readings": st["dropped"] + st["store_dropped"],
            "retries": st["retries"],
            "errors": st["errors"],
            "sensor_errors": st["sensor_errors"],
            "readings_sent": st["sent"],
            "firmware": VERSION,
            "board": self.board.name,
        }
        self.agent.event(3, "health: %s, firmware %s on %s" % (self.cause, VERSION, self.board.name), details)
        st["last_health_ms"] = now
        self._health_boot = False
        for k in _PERIOD_KEYS:
            st[k] = 0
        st["min_heap"] = -1
        self.log("health event queued")

    def _note_heap(self):
        free = self.hw.free_heap()
        if free is not None and (self.st["min_heap"] < 0 or free < self.st["min_heap"]):
            self.st["min_heap"] = free

    def _upload_due(self, now):
        st = self.st
        b = self.board
        if self._boot_upload:
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
        self._boot_upload = False
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
                self._adopt_learned_time()
                if not self._configured:
                    agent.configure(b.dsc())
                    self._configured = True
                    self.hw.feed()
                agent.token()
                self.hw.feed()
                self._adopt_learned_time()
                self._settle()
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
        self._settle()
        now = self.clock.now_ms()
        self._secret = self._read_secret()
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
            exp = self._secret[0]
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
        s = self.settings
        if net is None or not s.ssid:
            return True
        b = self.board
        hw = self.hw
        wlan = self._wlan
        if wlan is None:
            wlan = self._wlan = net.WLAN(net.STA_IF)
        if not wlan.active():
            wlan.active(True)
        if wlan.isconnected():
            return True
        try:
            wlan.config(reconnects=0)  # the node decides when to try again, not the driver
        except Exception:
            pass
        if s.hostname:
            try:
                net.hostname(s.hostname)
            except Exception:
                pass
        failed = []
        for name in ("STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_ASSOC_FAIL", "STAT_HANDSHAKE_TIMEOUT",
                     "STAT_BEACON_TIMEOUT", "STAT_CONNECT_FAIL"):
            code = getattr(net, name, None)
            if code is not None:
                failed.append(code)
        for attempt in range(b.wifi_attempts):
            if attempt:
                self.wait(min(b.wifi_backoff_ms << (attempt - 1), 60000))
            status = None
            try:
                wlan.connect(s.ssid, s.password)
                start = hw.ticks_ms()
                while True:
                    hw.feed()
                    if wlan.isconnected():
                        self.log("Wi-Fi up (try %d)" % (attempt + 1))
                        return True
                    status = wlan.status()
                    if status in failed or hw.ticks_diff(hw.ticks_ms(), start) >= b.wifi_timeout_ms:
                        break
                    hw.sleep_ms(100)
            except OSError as e:
                status = repr(e)
            self.st["retries"] += 1
            self.log("Wi-Fi try %d failed (status %s)" % (attempt + 1, status))
            try:
                wlan.disconnect()
            except Exception:
                pass
        try:
            wlan.active(False)  # radio off until the next try: saves the battery
        except Exception:
            pass
        return False

    def wifi_off(self):
        if self._wlan is not None:
            try:
                self._wlan.active(False)
            except Exception:
                pass

    # ---- between cycles -----------------------------------------------------------------------------------

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
            exp_ms = self._secret[0] * 1000
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
        for k in _STAT_KEYS:
            out[k] = st[k]
        out["pending_clock"] = len(self.pending)
        out["last_ts"] = self.last_ts
        out["last_values"] = self.last_values
        return out


def run(board=None, settings=None, hw=None, agent_factory=None, max_cycles=None, stop=None, log=None, root=""):
    """Boot the node and run cycles: max_cycles (tests), stop(node) -> True (the unix board's time
    limit), or forever. Returns the Node; a deep sleep does not return (on fakes it raises).

    board/settings: objects from mcagent.board, dicts (checked here) or paths; agent_factory(node) -> the
    agent (default: mcagent.Agent from settings); root: directory of the node's files (default: cwd)."""
    if board is None or isinstance(board, str):
        board = _board.load(board or "board.json")
    elif isinstance(board, dict):
        board = _board.parse(board)
    if settings is None or isinstance(settings, str):
        settings = _board.load_settings(settings or "settings.json")
    elif isinstance(settings, dict):
        settings = _board.parse_settings(settings)
    if hw is None:
        hw = _board.Hardware.detect()
    node = Node(board, settings, hw, agent_factory, log, stop, root)
    node.boot()
    while True:
        ms = node.step()
        if max_cycles is not None and node.cycles >= max_cycles:
            return node
        if stop is not None and stop(node):
            node.finish()
            return node
        node.sleep(ms)


# ---- entry points ---------------------------------------------------------------------------------------


def device_main():
    """On a board (boot runs main.py): files from the flash root, the real modules."""
    hw = _board.Hardware.detect()
    try:
        b = _board.load("board.json")
        settings = _board.load_settings("settings.json")
    except _board.BoardError as e:
        print("mcagent: not starting:", e)
        return None
    _board.release_parser()  # boot-only code: give its heap back
    if compat.exists("STOP") or (b.safe_pin is not None and hw.pin_low(b.safe_pin)):
        print("mcagent: STOP file or safe pin: staying at the REPL")
        return None
    try:
        return run(b, settings, hw)
    except ValueError as e:  # agentconfig.json missing or wrong: raised before the watchdog starts
        print("mcagent: not starting:", e)
        return None
    except Exception as e:  # after the watchdog started: do not let it reset us in a tight loop
        RunLog(settings.runlog).add("boot: " + describe(e))
        compat.print_exception(e)
        hw.deepsleep(600000)


_USAGE = """usage: micropython firmware/main.py [options]   (the unix board: the node on this computer)
  --flash IMAGE        littlefs image file used as the board's flash (created on first use)
  --root DIR           use a host directory as the flash instead (default: the current directory, as on
                       `mcagent vboard`; also works under CPython)
  --board PATH         board.json to install on the flash (default: the one already there)
  --settings PATH      settings.json to install on the flash
  --install PATH[:NAME]  copy a host file onto the flash, e.g. agentconfig.json or ca.der:certs/ca.der (CA
                       certificates go to certs/, where the node looks for them); repeatable
  --speed N            run the schedule N times faster (timestamps stay real)
  --run-s SECONDS      stop after this many real seconds (uploading what is left first)
  --cycles N           stop after N cycles
  --quiet              no per-cycle lines; only the final summary
"""


def _parse_args(argv):
    opts = {"flash": None, "root": None, "board": None, "settings": None, "install": [], "speed": None,
            "run_s": None, "cycles": None, "quiet": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(_USAGE)
            raise SystemExit(0)
        if a == "--quiet":
            opts["quiet"] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            raise SystemExit("main.py: %s needs a value\n%s" % (a, _USAGE))
        v = argv[i + 1]
        if a == "--install":
            opts["install"].append(v)
        elif a in ("--speed", "--run-s"):
            opts[a[2:].replace("-", "_")] = float(v)
        elif a == "--cycles":
            opts["cycles"] = int(v)
        elif a in ("--flash", "--root", "--board", "--settings"):
            opts[a[2:]] = v
        else:
            raise SystemExit("main.py: unknown option %s\n%s" % (a, _USAGE))
        i += 2
    return opts


def _copy(src, dst):
    import os

    parent = dst.rsplit("/", 1)[0]
    if parent and not compat.exists(parent):
        os.mkdir(parent)
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)


def unix_main(argv, agent_factory=None):
    """The unix board: flash = a littlefs image (or a directory), simulated sensors and deep sleep.

    It has no board modules (no WDT, RTC, Wi-Fi, NTP): the host's clock and network serve as they are.
    """
    import json
    import os

    opts = _parse_args(argv)
    dev = None
    if not opts["flash"]:
        root = (opts["root"] or ".").rstrip("/") or "/"
        if not compat.exists(root):
            os.mkdir(root)
    else:
        blocks = 512
        if opts["board"]:
            with open(opts["board"]) as f:
                blocks = json.loads(f.read()).get("flash", {}).get("blocks", blocks)
        dev = _board.mount_image(opts["flash"], "/flash", blocks)
        root = "/flash"
    if opts["board"]:
        _copy(opts["board"], root + "/board.json")
    if opts["settings"]:
        _copy(opts["settings"], root + "/settings.json")
    for item in opts["install"]:
        src, name = item, item.rsplit("/", 1)[-1]
        if ":" in item:
            src, name = item.rsplit(":", 1)
        _copy(src, root + "/" + name)
    here = os.getcwd()
    os.chdir(root)
    try:
        b = _board.load("board.json")
        b.scaled(opts["speed"] or b.speed)
        settings = _board.load_settings("settings.json")
        if compat.MICROPYTHON:
            _board.release_parser()  # boot-only code: give its heap back
        log = (lambda m: None) if opts["quiet"] else None
        import time

        start = compat.ticks_ms(time)
        limit_ms = int(opts["run_s"] * 1000) if opts["run_s"] else None
        cycles = [0]

        def stop(node):
            cycles[0] += 1
            if opts["cycles"] and cycles[0] >= opts["cycles"]:
                return True
            return limit_ms is not None and compat.ticks_diff(compat.ticks_ms(time), start, time) >= limit_ms

        cause = None
        while True:
            hw = _board.Hardware(reset_cause=cause or "PWRON_RESET")
            try:
                node = run(b, settings, hw, agent_factory, stop=stop, log=log)
                break
            except _board.DeepSleep as d:
                ms = d.ms
                if limit_ms is not None:  # do not oversleep the end of the run
                    ms = max(0, min(ms, limit_ms - compat.ticks_diff(compat.ticks_ms(time), start, time)))
                compat.sleep_ms(ms, time)
                cause = "DEEPSLEEP_RESET"
                compat.collect()
        print("mcagent-summary " + json.dumps(node.summary()))
        return node
    finally:
        os.chdir(here)
        if dev is not None:
            os.umount("/flash")
            dev.close()


def main(argv=None, agent_factory=None):
    if argv is None:
        argv = sys.argv[1:] if len(sys.argv) > 1 else []
    if argv or (compat.MICROPYTHON and sys.platform in ("linux", "darwin")):
        return unix_main(argv, agent_factory)
    return device_main()


if __name__ == "__main__":
    main()
