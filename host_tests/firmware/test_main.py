"""The node runtime (firmware/main.py) over fakes of machine, network, ntptime and esp32, with a fake agent.

Simulated time: machine.sim.time is the port's `time` module; sleeping advances it, timers fire and the
watchdog is checked on the way (WatchdogReset if it starves). A deep sleep raises machine.DeepSleep; the
test then advances time and boots the node again, as the board would. `Service` is the cloud plus the
agent's flash store: it survives reboots, the FakeAgent objects do not.
"""

import json
import os

import esp32
import machine
import network
import ntptime

import main
from checks import raises
from mcagent import board, compat
from mcagent.clock import SANE_AFTER_S
from mcagent.runlog import RunLog
from runtime import health
from runtime import hw as rhw
from runtime import node as rnode

ROOT = __file__.rsplit("/", 3)[0]
Y2K = 946684800
T0 = 1790000000  # 2026-09-21T14:13:20Z
SETTINGS = {"wifi": {"ssid": "plant-3", "password": "pw-not-logged"}, "ntp_host": "ntp.plant"}


class Service:
    """What outlives a reboot: the cloud (readings, events, the secret) and the agent's flash store."""

    def __init__(self, secret_life_s=7 * 86400, learn_time=True):
        self.secret_life_s = secret_life_s
        self.learn_time = learn_time
        self.secret_exp = None
        self.rotations = 0
        self.locked_out = False
        self.flash = []  # [ts, values] recorded, not yet acknowledged
        self.outbox = []  # events queued
        self.readings = []  # acknowledged by the "server"
        self.events = []
        self.dscs = []
        self.flush_script = []  # per flush(): None = fine, "raise", "error", ("stall", ms)
        self.flushes = 0
        self.tokens = 0
        self.record_errors = 0  # the next n record() calls raise RuntimeError
        self.agents = 0


class TlsVerifyError(OSError):
    """Named like mcagent.http's: a wrong CA is not weather."""


class _Config:
    client_id = "fake-agent"


class FakeAgent:
    """The Agent's public face (onboard, configure, token, record, event, flush, status, clock)."""

    def __init__(self, node, svc):
        self.svc = svc
        self.clock = node.clock
        self.config = _Config()
        svc.agents += 1

    def _true_s(self):
        return machine.sim.time.true_ms // 1000

    def _contact(self):
        """Every server answer carries a Date header: the agent learns the time from it."""
        if self.svc.learn_time:
            self.clock.learn(self._true_s())

    def record(self, values, timestamp_ms=None):
        if self.svc.record_errors:
            self.svc.record_errors -= 1
            raise RuntimeError("store: simulated bug")
        assert timestamp_ms is not None and timestamp_ms // 1000 >= SANE_AFTER_S, timestamp_ms
        self.svc.flash.append([timestamp_ms, dict(values)])

    def event(self, severity, description, details=None):
        self.svc.outbox.append((severity, description, details))

    def onboard(self):
        self._contact()
        if self.svc.secret_exp is None:
            self.svc.secret_exp = self._true_s() + self.svc.secret_life_s
            return True
        return False

    def configure(self, dsc):
        self._contact()
        self.svc.dscs.append(dsc)
        return {"configurationId": dsc["configurationId"], "dsc": "same"}

    def token(self):
        svc = self.svc
        svc.tokens += 1
        self._contact()
        now = self._true_s()
        if svc.secret_exp is not None:
            if now >= svc.secret_exp:
                svc.locked_out = True
                raise RuntimeError("secret expired: needs a new onboarding key")
            if svc.secret_exp - now < min(90000, svc.secret_life_s // 2):  # the agent's rule (Node's 25 h)
                svc.secret_exp = now + svc.secret_life_s
                svc.rotations += 1
        return "token"

    def status(self):
        exp = self.svc.secret_exp
        if exp is None:
            return {"secret_expires_at": None, "rotation_due_at": None}
        return {"secret_expires_at": exp, "rotation_due_at": exp - min(90000, self.svc.secret_life_s // 2)}

    def flush(self):
        svc = self.svc
        svc.flushes += 1
        step = svc.flush_script.pop(0) if svc.flush_script else None
        if step == "raise":
            raise OSError(113)  # EHOSTUNREACH: a transport error (TransportError is an OSError)
        if step == "tls":
            raise TlsVerifyError("certificate verify failed")
        if step == "garbled":  # sent, but a summary the node cannot count (an error after the flush)
            svc.readings += svc.flash
            svc.flash = []
            return {"readings_sent": "all of them"}
        if step == "error":
            return {"readings_sent": 0, "retries": 3, "error": "transport: timed out (gave up after 5 tries)",
                    "pending": len(svc.flash), "dropped": 0}
        if isinstance(step, tuple) and step[0] == "stall":
            for _ in range(step[1] // 1000):  # a service answering byte by byte: time passes, nobody feeds
                machine.sim.time.advance(1000)
        self.token()
        sent = len(svc.flash)
        svc.readings += svc.flash
        svc.flash = []
        svc.events += svc.outbox
        svc.outbox = []
        return {"readings_sent": sent, "events_sent": 0, "retries": 0, "error": None, "dropped": 0,
                "pending": 0}

    def close(self):
        pass


def board_doc(sleep="awake", sample_s=60, upload_samples=5, upload_s=3600, health_s=86400, **extra):
    doc = {
        "board": "testnode",
        "chip": "esp32s3",
        "sensors": [
            {"kind": "sim", "name": "air", "points": [
                {"channel": "t", "id": "DP-T", "base": 20, "amplitude": 2, "period_s": 3600}]},
            {"kind": "mcu_temp", "name": "chip", "points": [{"id": "DP-Chip"}]},
        ],
        "schedule": {"sample_s": sample_s, "upload_samples": upload_samples, "upload_s": upload_s,
                     "sleep": sleep, "health_s": health_s},
        "watchdog_s": 30,
        "upload_budget_s": 60,
        "wifi": {"timeout_s": 10, "attempts": 2, "backoff_s": 2},
    }
    doc.update(extra)
    return doc


def fresh(time=None, wifi=None, ntp_failures=0):
    machine.reset_sim(time=time or machine.SimTime(T0, epoch_year=2000))
    network.reset_sim(script=wifi)
    ntptime.reset_sim(failures=ntp_failures)
    esp32.reset_sim()


def boot(workdir, svc, doc, cycles=None, logs=None, cause=None):
    if cause is not None:
        machine.reboot(cause)
    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    log = logs.append if logs is not None else (lambda m: None)
    return main.run(doc, SETTINGS, hw, lambda node: FakeAgent(node, svc), max_cycles=cycles, log=log,
                    root=workdir)


def live(workdir, svc, doc, seconds, logs=None, first_cause=machine.PWRON_RESET):
    """Boot, run until deep sleep, sleep, wake ... for `seconds` of simulated time. Returns the sleeps
    (ms)."""
    end = machine.sim.time.true_ms + seconds * 1000
    sleeps = []
    cause = first_cause
    while machine.sim.time.true_ms < end:
        try:
            boot(workdir, svc, doc, logs=logs, cause=cause)
            raise AssertionError("the node never went to deep sleep")
        except machine.DeepSleep as d:
            sleeps.append(d.ms)
            cause = machine.DEEPSLEEP_RESET
            machine.reboot(cause)  # asleep: no watchdog, no timers
            machine.sim.time.advance(d.ms)
    return sleeps


def _gaps(stamps):
    return [stamps[i + 1] - stamps[i] for i in range(len(stamps) - 1)]


def _state(workdir):
    from mcagent.state import State

    return State(workdir + "/node").load("state")


def _runlog(workdir):
    return RunLog(workdir + "/runlog.txt").lines()


def test_wifi_down_at_boot(workdir):
    fresh(wifi=["no_ap"] * 5)
    svc = Service()
    logs = []
    node = boot(workdir, svc, board_doc(upload_samples=3), cycles=12, logs=logs)
    # The boot upload and the next one failed (2 tries each), the third phase connected on its 2nd try.
    assert network.sim.outcomes[:6] == ["no_ap"] * 5 + ["ok"], network.sim.outcomes
    assert len([m for m in logs if m.startswith("Wi-Fi try")]) == 5
    n = node.st["taken"]
    assert n == node.st["recorded"] and n >= 10  # 12 cycles, one or two of them only a retry
    # every reading taken arrived, in order, one minute apart, none lost while the network was away
    got = [r[0] for r in svc.readings] + [r[0] for r in svc.flash]
    assert len(got) == n and got == sorted(got)
    slots = [(t - got[0]) // 60000 for t in got]
    assert slots == list(range(n)), got  # on the one-minute grid (late by seconds if an upload was running)
    assert max((t - got[0]) % 60000 for t in got) < 10000, got
    assert svc.readings[0][1]["DP-Chip"] == 42.0
    assert svc.events and svc.events[0][2]["reset_cause"] == "PWRON_RESET"
    assert svc.events[0][2]["retries"] == 0  # queued at boot, before anything failed
    assert node.st["fails"] == 0 and node.st["uploads"] >= 2
    assert _runlog(workdir) == []  # weather is not an error
    assert machine.sim.wdt.expired == 0 and machine.sim.wdt.feeds > 20
    assert network.sim.ssid == "plant-3" and network.sim.config.get("reconnects") == 0
    assert not [m for m in logs if "pw-not-logged" in m]


def test_ntp_failing_time_from_server_on_a_2000_epoch_clock(workdir):
    # An ESP32 after a power cut: time() counts from 2000 and the RTC says 2000-01-01 00:00:05.
    t = machine.SimTime(T0, epoch_year=2000, device_unix_s=Y2K + 5)
    fresh(time=t, ntp_failures=-1)
    assert compat.epoch_offset(t) == Y2K and t.time() == 5
    svc = Service()
    logs = []
    node = boot(workdir, svc, board_doc(upload_samples=3), cycles=7, logs=logs)
    assert ntptime.sim.calls == 3 and ntptime.sim.hosts == ["ntp.plant"] * 3  # retried, then given up
    assert "NTP failed: the time comes from the server's Date" in logs
    assert any(m.startswith("RTC set from the server's time") for m in logs)
    assert abs(t.error_ms) < 1000  # the RTC now tells the truth: it survives deep sleep
    assert node.clock.is_sane() and abs(node.clock.correction_ms) < 1000
    # The first sample was taken while the clock was unknown: held in RAM, then stamped correctly.
    stamps = [r[0] for r in svc.readings + svc.flash]
    assert len(stamps) == 7
    assert abs(stamps[0] - T0 * 1000) < 2000, stamps[0] - T0 * 1000
    assert _gaps(stamps) == [60000] * 6, stamps
    assert node.st["dropped"] == 0
    # the health event waited for a sane clock
    assert len(svc.events) + len(svc.outbox) == 1


def test_ntp_retried_until_it_answers(workdir):
    t = machine.SimTime(T0, epoch_year=2000, device_unix_s=Y2K + 5)
    fresh(time=t, ntp_failures=2)
    svc = Service(learn_time=False)  # a server without Date headers: only NTP can help
    logs = []
    node = boot(workdir, svc, board_doc(upload_samples=2), cycles=4, logs=logs)
    assert ntptime.sim.calls == 3
    assert [m for m in logs if m.startswith("clock set by NTP")]
    assert abs(t.error_ms) < 1000 and node.clock.is_sane()
    assert node.st["ntp_ms"] > 0
    stamps = [r[0] for r in svc.readings + svc.flash]
    assert abs(stamps[0] - T0 * 1000) < 5000 and len(stamps) == 4


def test_unknown_clock_and_no_network_keeps_bounded_samples_awake(workdir):
    t = machine.SimTime(T0, epoch_year=2000, device_unix_s=Y2K + 5)
    fresh(time=t, wifi=["no_ap"] * 1000, ntp_failures=-1)
    svc = Service()
    node = boot(workdir, svc, board_doc(sleep="deep", sample_s=60), cycles=40)  # deep sleep would lose them
    assert machine.sim.deepsleeps == []
    assert len(node.pending) == 24 and node.st["dropped"] == node.st["taken"] - 24 > 0
    assert svc.flash == [] and node.st["recorded"] == 0


def test_time_unknown_after_upload_does_not_spin(workdir):
    # NTP blocked and a server without Date headers: uploads succeed, the held samples still have no time.
    t = machine.SimTime(T0, epoch_year=2000, device_unix_s=Y2K + 5)
    fresh(time=t, ntp_failures=-1)
    svc = Service(learn_time=False)
    logs = []
    node = boot(workdir, svc, board_doc(upload_samples=3), cycles=30, logs=logs)
    assert svc.flushes <= 12, svc.flushes
    assert t.true_ms - T0 * 1000 > 20 * 60000  # 30 cycles took simulated time: backoff, not a tight loop
    assert [m for m in logs if "the time is still unknown" in m]
    assert len(node.pending) == 24 and svc.flash == []


def test_deep_sleep_commits_the_readings_before_it_saves_the_schedule(workdir):
    from runtime import node as rnode

    fresh()
    svc = Service()
    order = []

    class Agent(FakeAgent):
        def close(self):
            order.append("commit")

    save = rnode.Node.save_state

    def saving(self):
        order.append("save")
        return save(self)

    rnode.Node.save_state = saving
    try:
        hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
        doc = board_doc(sleep="deep", sample_s=300, upload_samples=3, upload_s=86400)
        raises(machine.DeepSleep, main.run, doc, SETTINGS, hw, lambda n: Agent(n, svc), log=lambda m: None,
               root=workdir)
    finally:
        rnode.Node.save_state = save
    assert order[-2:] == ["commit", "save"], order


def test_readings_the_store_dropped_are_reported_without_an_upload(workdir):
    """During an outage (no flush, so no flush summary) the health event and the run's summary still give
    the store's own count of readings its capacity policy dropped."""
    fresh(wifi=["no_ap"] * 100)
    svc = Service()

    class Agent(FakeAgent):
        def dropped(self):
            return 7

    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    node = main.run(board_doc(), SETTINGS, hw, lambda n: Agent(n, svc), max_cycles=2, log=lambda m: None,
                    root=workdir)
    assert svc.flushes == 0 and svc.outbox[0][2]["dropped_readings"] == 7
    assert health.summary(node)["store_dropped"] == 7


def test_tls_verification_failure_goes_to_the_run_log(workdir):
    fresh()
    svc = Service()
    svc.flush_script = ["tls"]
    logs = []
    node = boot(workdir, svc, board_doc(upload_samples=2), cycles=4, logs=logs)
    entries = _runlog(workdir)
    assert len(entries) == 1 and "TlsVerifyError: certificate verify failed" in entries[0], entries
    # retried when its pause is over, like any failed upload (the boot's reading), then the schedule's
    assert node.st["uploads"] == 2 and len(svc.readings) == 3 and "upload (retry) done" in " ".join(logs)


def test_a_failed_boot_upload_is_tried_again_when_its_pause_is_over(workdir):
    """Not only when the schedule next wants an upload (here 10 samples of 10 minutes away)."""
    fresh()
    svc = Service()
    svc.flush_script = ["error"]
    logs = []
    t0 = machine.sim.time.true_ms
    node = boot(workdir, svc, board_doc(sample_s=600, upload_samples=10, upload_s=86400), cycles=2, logs=logs)
    assert "upload (retry) done" in " ".join(logs) and node.st["uploads"] == 1 and len(svc.readings) == 1
    assert machine.sim.time.true_ms - t0 <= 60000  # the backoff's first pause: 15-30 s


def test_upload_failing_for_several_cycles(workdir):
    fresh()
    svc = Service()
    svc.flush_script = [None, "raise", "error", "raise", "error"]
    logs = []
    node = boot(workdir, svc, board_doc(upload_samples=2), cycles=40, logs=logs)
    fails = [m for m in logs if "failed" in m and m.startswith("upload")]
    assert len(fails) == 4, fails
    waits = [int(m.split("next try in ")[1].split()[0]) for m in fails]
    assert waits[0] >= 15 and waits[-1] >= 2 * waits[0] // 2 and max(waits) <= 3600, waits
    assert svc.flushes >= 6
    # nothing lost: every reading recorded is either acknowledged or still on flash, in order
    stamps = [r[0] for r in svc.readings + svc.flash]
    assert len(stamps) == node.st["recorded"] == node.st["taken"]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert node.st["fails"] == 0 and node.st["retry_at_ms"] == 0
    assert node.st["retries"] >= 4 + 6  # 4 failed phases plus the retries the agent reported
    assert _runlog(workdir) == []


def test_deep_sleep_wake_resumes_from_flash(workdir):
    fresh()
    svc = Service()
    doc = board_doc(sleep="deep", sample_s=300, upload_samples=3, upload_s=86400)
    sleeps = live(workdir, svc, doc, 8 * 300 - 1)
    assert len(sleeps) == 8 and all(290000 <= s <= 300000 for s in sleeps), sleeps
    st = _state(workdir)
    assert st["boots"] == 8 and st["wakes"] == 7 and st["taken"] == 8
    assert svc.agents == 8
    # the boot upload, then every 3rd sample, counting across deep sleeps
    assert svc.flushes == 3 and len(svc.readings) == 7 and len(svc.flash) == 1
    assert st["samples"] == 1
    assert len(svc.events) == 1  # health once per cold boot, not per wake
    assert machine.sim.rtc_memory.startswith(b"MCN1")

    # power cut: RTC memory lost, the flash state carries on
    machine.reboot(machine.PWRON_RESET, keep_rtc_memory=False)
    try:
        boot(workdir, svc, doc)
    except machine.DeepSleep:
        pass
    st = _state(workdir)
    assert st["boots"] == 9 and st["samples"] == 0 and st["taken"] == 9  # 2 + boot upload
    assert len(svc.outbox) + len(svc.events) == 2  # a cold boot: another health event

    # flash state lost (say, the last save failed): the RTC memory copy is the newer one and wins
    seq = st["seq"]
    os.remove(workdir + "/node/state")
    machine.reboot(machine.DEEPSLEEP_RESET)
    machine.sim.time.advance(300000)
    try:
        boot(workdir, svc, doc)
    except machine.DeepSleep:
        pass
    st = _state(workdir)
    assert st["boots"] == 10 and st["seq"] == seq + 1 and st["taken"] == 10

    # garbage in RTC memory: only a hint, ignored
    machine.sim.rtc_memory = b"MCN1 garbage \xff\x00"
    machine.reboot(machine.DEEPSLEEP_RESET)
    machine.sim.time.advance(300000)
    try:
        boot(workdir, svc, doc)
    except machine.DeepSleep:
        pass
    assert _state(workdir)["boots"] == 11


def test_watchdog_fed_during_a_stalled_upload(workdir):
    fresh()
    svc = Service()
    svc.flush_script = [("stall", 120000)]  # 4x the watchdog's 30 s, within the upload budget
    node = boot(workdir, svc, board_doc(upload_samples=1), cycles=3)
    wdt = machine.sim.wdt
    assert wdt.timeout == 30000 and wdt.expired == 0
    assert len(machine.sim.timers) == 1 and machine.sim.timers[0].period == 7500
    assert node.hw.feeds >= 120000 // 7500
    assert len(svc.readings) == 3

    # A hung upload (longer than the budget: 60 s + Wi-Fi allowance + 60 s) is left to the watchdog.
    fresh()
    svc = Service()
    svc.flush_script = [("stall", 600000)]
    e = raises(machine.WatchdogReset, boot, workdir, svc, board_doc(upload_samples=1), 3)
    assert "not fed" in str(e)


def test_a_slow_wifi_does_not_use_up_the_flush_s_watchdog_budget(workdir):
    """Wi-Fi tries with growing pauses (20, 40, 60, 60 s) take longer than the guard charges for them; the
    flush after them still gets its own budget, so a slow but working upload is not reset by the watchdog."""
    fresh(wifi=["no_ap"] * 4)
    svc = Service()
    svc.flush_script = [("stall", 130000)]  # past what the first guard leaves (270 s from its start)
    doc = board_doc(upload_samples=1, wifi={"timeout_s": 10, "attempts": 5, "backoff_s": 20})
    boot(workdir, svc, doc, cycles=1)
    assert machine.sim.wdt.expired == 0 and len(svc.readings) == 1


def test_watchdog_fed_through_a_stalled_upload_across_the_ticks_wrap(workdir):
    """An upload starting just before ticks_ms wraps (every 2^30 ms, 12.4 days awake): its deadline is a
    tick too (ticks_add), so the timer keeps feeding the watchdog past the wrap."""
    fresh(time=machine.SimTime(T0, epoch_year=2000, ticks=(1 << 30) - 20000))
    svc = Service()
    svc.flush_script = [("stall", 120000)]
    boot(workdir, svc, board_doc(upload_samples=1), cycles=3)
    assert machine.sim.wdt.expired == 0 and len(svc.readings) == 3


def test_sleep_capped_by_secret_expiry(workdir):
    fresh()
    svc = Service(secret_life_s=1200)  # the secret lives 20 minutes; the node sleeps an hour between samples
    doc = board_doc(sleep="deep", sample_s=3600, upload_samples=1, upload_s=86400)
    logs = []
    sleeps = live(workdir, svc, doc, 6 * 3600, logs)
    assert not svc.locked_out
    assert max(sleeps) <= 600000, max(sleeps)  # woke in time for every rotation
    assert svc.rotations >= 6 * 3600 // 600 - 2, svc.rotations
    st = _state(workdir)
    assert 6 <= st["taken"] <= 7  # still one sample an hour
    assert svc.rotations - 1 <= st["rotations"] <= svc.rotations

    # Wi-Fi gone for a while at rotation time: tries come denser towards the expiry, never past it.
    network.reset_sim(script=["no_ap"] * 6)
    exp = svc.secret_exp
    sleeps = live(workdir, svc, doc, 3600, logs, first_cause=machine.DEEPSLEEP_RESET)
    assert not svc.locked_out and svc.secret_exp > exp
    assert network.sim.outcomes[:7] == ["no_ap"] * 6 + ["ok"]


def test_a_secret_without_expiry_is_not_rotated_at_every_wake(workdir):
    """The node keeps the secret's expiry with its schedule and asks the agent again only after an upload.
    When the agent then has none (a secret without expiry), the saved one goes too: the node does not wake
    for a rotation nobody needs, upload after upload."""
    fresh()
    svc = Service(secret_life_s=1200)
    doc = board_doc(sleep="deep", sample_s=300, upload_samples=1000, upload_s=86400)
    live(workdir, svc, doc, 600)
    assert _state(workdir)["secret_exp"] == svc.secret_exp  # saved at the boot upload
    svc.secret_exp += 10 ** 7  # the service keeps it, and the agent now reports none
    status = FakeAgent.status
    FakeAgent.status = lambda self: {"secret_expires_at": None, "rotation_due_at": None}
    try:
        before = svc.flushes
        live(workdir, svc, doc, 3600, first_cause=machine.DEEPSLEEP_RESET)
    finally:
        FakeAgent.status = status
    assert svc.flushes - before == 1, svc.flushes - before  # the saved rotation time came: asked once
    assert _state(workdir)["secret_exp"] == -1


def test_health_event_daily_with_the_numbers(workdir):
    fresh()
    svc = Service()
    node = boot(workdir, svc, board_doc(sample_s=3600, upload_samples=1), cycles=50)
    events = svc.events + svc.outbox
    assert len(events) == 3, [e[1] for e in events]  # at boot, after 24 h and 48 h
    sev, text, details = events[0]
    assert sev == 3 and text.startswith("health: PWRON_RESET")
    for key in ("reset_cause", "min_free_heap", "dropped_readings", "retries", "firmware", "board", "boots",
                "errors"):
        assert key in details, key
    from mcagent import VERSION

    assert details["firmware"] == VERSION and details["board"] == "testnode"
    assert isinstance(details["min_free_heap"], int)
    assert node.st["taken"] == 50


def test_unexpected_exception_is_logged_and_the_node_goes_on(workdir):
    fresh()
    svc = Service()
    svc.record_errors = 3
    logs = []
    node = boot(workdir, svc, board_doc(sample_s=60, upload_samples=2), cycles=12, logs=logs)
    entries = _runlog(workdir)
    assert len(entries) == 3, entries
    assert all("sample: RuntimeError: store: simulated bug" in e for e in entries), entries
    assert entries[0].startswith("2026-09-21T")
    # counted (the first one went with the boot's health event, which resets the period's counters)
    assert node.st["errors"] == 2 and len(svc.events) + len(svc.outbox) >= 1
    # each failure cost its own sample only: the cycles went on with the schedule
    assert len(svc.readings) + len(svc.flash) == node.st["recorded"] == 9


def test_a_failing_sample_does_not_stop_the_upload_or_the_schedule(workdir):
    """record() failing every time (a store bug): each wake counts it and still uploads what is on flash
    (the health event here) and sleeps until the next slot, instead of backing off and never uploading."""
    fresh()
    svc = Service()
    svc.record_errors = 10**6
    doc = board_doc(sleep="deep", sample_s=300, upload_samples=3, upload_s=3600)
    sleeps = live(workdir, svc, doc, 3600)
    assert len(sleeps) == 12 and all(290000 <= s <= 300000 for s in sleeps), sleeps
    assert svc.flushes >= 2 and len(svc.events) == 1 and _state(workdir)["errors"] >= 11


class Refused(ValueError):
    """Like mcagent.store.StoreError: the store refuses a value, names it (dp_id), writes nothing."""


def test_a_value_the_store_refuses_costs_only_that_point(workdir):
    fresh()
    svc = Service()

    class Agent(FakeAgent):
        def record(self, values, timestamp_ms=None):
            if "DP-Chip" in values:
                e = Refused("DP-Chip (INT): bad value 3000000000")
                e.dp_id = "DP-Chip"
                raise e
            FakeAgent.record(self, values, timestamp_ms)

    logs = []
    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    node = main.run(board_doc(), SETTINGS, hw, lambda n: Agent(n, svc), max_cycles=3, log=logs.append,
                    root=workdir)
    stamps = [r for r in svc.readings + svc.flash]
    assert len(stamps) == 3 and all(list(v) == ["DP-T"] for _, v in stamps), stamps
    # counted (the first with the boot's health event, which resets the period's counters)
    assert node.st["recorded"] == 3 and node.st["sensor_errors"] == 2 and node.st["errors"] == 0
    assert "DP-Chip dropped: DP-Chip (INT): bad value 3000000000" in logs


def test_a_full_flash_counts_the_samples_it_cannot_take(workdir):
    """OSError from record() (ENOSPC: another file took the flash): each sample is counted in `dropped`, no
    run-log line is written to the full flash, and the cycles go on."""
    fresh()
    svc = Service()

    class Agent(FakeAgent):
        def record(self, values, timestamp_ms=None):
            raise OSError(28, "ENOSPC")

    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    node = main.run(board_doc(), SETTINGS, hw, lambda n: Agent(n, svc), max_cycles=3, log=lambda m: None,
                    root=workdir)
    assert node.st["dropped"] == 3 and node.st["errors"] == 0 and _runlog(workdir) == []


def test_a_sample_the_heap_cannot_take_is_counted_as_dropped(workdir):
    """MemoryError from record(): the reading is gone, so the health event's dropped readings count it; the
    cycle still reports it as an unexpected error, and goes on to its upload."""
    fresh()
    svc = Service()

    class Agent(FakeAgent):
        def record(self, values, timestamp_ms=None):
            raise MemoryError("memory allocation failed, allocating 80 bytes")

    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    logs = []
    node = main.run(board_doc(), SETTINGS, hw, lambda n: Agent(n, svc), max_cycles=2, log=logs.append,
                    root=workdir)
    assert node.st["dropped"] == 2 and node.st["recorded"] == 0 and node.st["taken"] == 2
    assert any("unexpected error in sample: MemoryError" in m for m in logs), logs


def test_a_sampling_module_the_heap_cannot_load_costs_the_sample_not_the_upload(workdir):
    """A MemoryError loading runtime.sampling is the sample's error, as one inside it: the slot is spent,
    the cycle goes on to its upload, and no back-off follows."""
    from mcagent import compat

    fresh()
    svc = Service()
    load = compat.load

    def short_heap(name):
        if name == "runtime.sampling":
            raise MemoryError("memory allocation failed, allocating 640 bytes")
        return load(name)

    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    logs = []
    compat.load = short_heap
    try:
        node = main.run(board_doc(sleep="deep", upload_samples=1), SETTINGS, hw, lambda n: FakeAgent(n, svc),
                        max_cycles=1, log=logs.append, root=workdir)
    finally:
        compat.load = load
    assert any("unexpected error in sample: MemoryError" in m for m in logs), logs
    assert svc.flushes == 1 and node.st["err_row"] == 0, (svc.flushes, node.st)


def test_a_failing_cycle_backs_off_across_deep_sleep_wakes(workdir):
    """The pause after an unexpected error grows from wake to wake (the streak is saved with the state)."""
    from runtime import node as rnode

    fresh()
    svc = Service()
    doc = board_doc(sleep="deep", sample_s=300, upload_samples=3, upload_s=86400)
    live(workdir, svc, doc, 1)
    cycle = rnode.Node.cycle

    def broken(self):
        raise RuntimeError("simulated bug")

    rnode.Node.cycle = broken
    try:
        sleeps = live(workdir, svc, doc, 100, first_cause=machine.DEEPSLEEP_RESET)
    finally:
        rnode.Node.cycle = cycle
    assert sleeps[:4] == [5000, 10000, 20000, 40000], sleeps
    assert live(workdir, svc, doc, 1, first_cause=machine.DEEPSLEEP_RESET)[0] > 5000  # working again
    assert _state(workdir)["err_row"] == 0


def test_crash_loop_is_spaced_out(workdir):
    fresh()
    svc = Service()
    doc = board_doc(sleep="deep")
    for _ in range(2):  # two watchdog resets: the node starts work at once
        machine.reboot(machine.WDT_RESET)
        node = rnode.Node(*main.configure(doc, SETTINGS),
                         rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time),
                         lambda n: FakeAgent(n, svc), lambda m: None, None, workdir)
        node.boot()
    machine.reboot(machine.WDT_RESET)
    node = rnode.Node(*main.configure(doc, SETTINGS),
                     rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time),
                     lambda n: FakeAgent(n, svc), lambda m: None, None, workdir)
    e = raises(machine.DeepSleep, node.boot)  # the third in a row: sleep a minute before trying again
    assert e.ms == 60000 and _state(workdir)["crash"] == 3
    try:
        boot(workdir, svc, doc, cause=machine.DEEPSLEEP_RESET)
    except machine.DeepSleep:
        pass
    assert _state(workdir)["crash"] == 0  # a good cycle ends the streak


def test_config_errors_stop_before_the_watchdog(workdir):
    fresh()
    doc = board_doc()
    doc["schedule"]["sleep"] = "hibernate"
    e = raises(board.BoardError, boot, workdir, Service(), doc, 1)
    assert "schedule.sleep" in str(e)

    def no_config(node):
        raise ValueError("agentconfig.json: cannot be read")

    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    raises(ValueError, main.run, board_doc(), SETTINGS, hw, no_config, 1, None, None, workdir)
    assert machine.sim.wdt is None  # nothing will reset the board: it waits at the REPL for a fix


def test_board_entry_stays_at_the_repl_on_stop_or_a_wrong_board(workdir):
    # main.device_main (a board's boot): a STOP file or a board.json with a wrong field keeps the node at
    # the REPL (returns, nothing started, no watchdog) instead of resetting in a loop.
    fresh()
    here = os.getcwd()
    os.chdir(workdir)
    try:
        with open("board.json", "w") as f:
            f.write(json.dumps(board_doc()))
        with open("settings.json", "w") as f:
            f.write(json.dumps(SETTINGS))
        with open("STOP", "w") as f:
            f.write("")
        assert main.device_main() is None and machine.sim.wdt is None
        os.remove("STOP")
        doc = board_doc()
        doc["schedule"]["sleep"] = "hibernate"
        with open("board.json", "w") as f:
            f.write(json.dumps(doc))
        assert main.device_main() is None and machine.sim.wdt is None
    finally:
        os.chdir(here)


def test_runlog_ring_is_bounded(workdir):
    log = RunLog(workdir + "/rl.txt", max_bytes=300, per_boot=50)
    for i in range(40):
        try:
            raise KeyError("entry " + str(i))
        except KeyError as e:
            assert log.add(e, "boot1")
    lines = log.lines()
    assert lines[-1].startswith("boot1 KeyError: ") and "entry 39" in lines[-1]
    assert os.stat(workdir + "/rl.txt")[6] <= 300 and os.stat(workdir + "/rl.txt.1")[6] <= 300
    capped = RunLog(workdir + "/rl2.txt", per_boot=2)
    assert capped.add("a") and capped.add("b") and not capped.add("c")
    assert capped.lines() == ["a", "b"] and capped.suppressed == 1


def test_a_fault_of_every_cycle_writes_the_run_log_twenty_times_a_boot(workdir):
    """The node writes one entry at a time, each through a RunLog of its own: the per-boot cap holds across
    them, so a fault that repeats every cycle neither wears the flash nor pushes the first entries out."""
    fresh()
    svc = Service()
    svc.record_errors = 10**6
    node = boot(workdir, svc, board_doc(sample_s=60), cycles=30)
    assert node.st["errors"] + 1 >= 29 and node.logged == 20  # counted every time, written twenty times
    assert _runlog(workdir)[-1].startswith("2026-09-21T14:32:20")  # the twentieth cycle: then no more


def _boom():
    raise KeyError("x")


def test_runlog_names_the_function_of_the_innermost_frames(workdir):
    """An entry: type, message, the two innermost frames (file and function; a deployed .mpy has no line
    numbers, and describe() leaves out the "line 1" such a frame shows)."""
    from mcagent import runlog

    try:
        _boom()
    except KeyError as e:
        text = runlog.describe(e)
    assert text.startswith("KeyError: ") and "| File " in text and text.endswith("in _boom"), text


def unix_board(workdir):
    """(the Service, an agent factory, the flash arguments) for a run of the unix board: a littlefs image
    where the interpreter has VfsLfs2, else a directory."""
    svc = Service(learn_time=False)
    machine.reset_sim(time=machine.SimTime(T0))  # the FakeAgent's "server" time; the node uses the host's

    def agent(node):
        a = FakeAgent(node, svc)
        a._true_s = lambda: node.clock.now_s()
        return a

    if hasattr(os, "VfsLfs2"):
        return svc, agent, ["--flash", workdir + "/flash.img"]
    return svc, agent, ["--root", workdir + "/flash"]


def test_unix_board_runs_with_simulated_deep_sleep(workdir):
    svc, agent, where = unix_board(workdir)
    argv = where + ["--board", ROOT + "/boards/unix/board.json", "--speed", "300", "--cycles", "9", "--quiet"]
    node = main.main(argv, agent)
    s = health.summary(node)
    assert s["taken"] == 9 and s["wakes"] >= 2 and s["boots"] == s["wakes"] + 1, s
    # the period's counters too (make fit refuses a run that counted an error or lost a sample)
    assert s["errors"] == 0 and s["sensor_errors"] == 0 and s["recorded"] == 9, s
    assert svc.flash == [] and len(svc.readings) == 9  # the end of the run uploads what is left
    # the recorded values are exactly the simulator's at their timestamps
    with open(ROOT + "/boards/unix/board.json") as f:
        sensors = json.loads(f.read())["sensors"]
    from sensors import sim

    for ts, values in svc.readings:
        for s in sensors:
            for p in s["points"]:
                want = sim.value_at(p, ts, s["seed"])
                assert values[p["id"]] == (int(want) if p.get("type") == "INT" else want)
    assert os.getcwd() != "/flash"


def test_unix_board_runs_one_wake_from_deep_sleep(workdir):
    """--wake: one wake as a board's from deep sleep (make fit measures such wakes): the node resumes from the
    state on the flash with reset cause DEEPSLEEP_RESET, and the run ends when it sleeps again, uploading
    nothing that is not due."""
    import time

    svc, agent, where = unix_board(workdir)
    board = ["--board", ROOT + "/boards/unix/board.json"]
    first = main.main(where + board + ["--speed", "300", "--cycles", "1", "--quiet"], agent)
    assert first.cause == "PWRON_RESET" and first.st["taken"] == 1 and len(svc.readings) == 1
    time.sleep(0.3)  # the next sample is due (60 s / 300); the next upload is not (5 samples or 600 s / 300)
    node = main.main(where + ["--speed", "300", "--wake", "--quiet"], agent)
    assert node.cause == "DEEPSLEEP_RESET" and node.cycles == 1, node.cause
    assert node.st["wakes"] == 1 and node.st["taken"] == 2 and node.st["recorded"] == 2, node.st
    assert len(svc.readings) == 1 and len(svc.flash) == 1  # recorded, left for the upload when it is due
    assert os.getcwd() != "/flash"
    # a board that stays awake has no wake from deep sleep: refused, not run forever
    with open(ROOT + "/boards/unix/board.json") as f:
        doc = json.loads(f.read())
    doc["schedule"]["sleep"] = "awake"
    doc["schedule"].pop("upload_wake", None)  # an awake board has no wake of its own to upload in
    with open(workdir + "/awake.json", "w") as f:
        f.write(json.dumps(doc))
    argv = ["--root", workdir + "/awake", "--board", workdir + "/awake.json", "--wake"]
    e = raises(SystemExit, main.main, argv)
    assert "--wake needs a board that deep-sleeps" in str(e)
    assert os.getcwd() != workdir + "/awake"


def test_a_run_limit_cuts_an_awake_wait_short(workdir):
    """stop(node) may answer with the ms left of a run (the unix board's --run-s): an awake node does not
    wait out a two-minute interval past it."""
    fresh()
    svc = Service()
    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    calls = []

    def stop(node):
        calls.append(machine.sim.time.true_ms)
        return True if len(calls) == 2 else 1500

    main.run(board_doc(sample_s=120), SETTINGS, hw, lambda n: FakeAgent(n, svc), stop=stop,
             log=lambda m: None, root=workdir)
    assert len(calls) == 2 and calls[1] - calls[0] <= 1500 + 1000


def test_unix_board_command_line_refuses_zero_and_makes_the_root(workdir):
    for opt, value in (("--cycles", "0"), ("--run-s", "0"), ("--speed", "abc")):
        e = raises(SystemExit, main.main, ["--root", workdir + "/r", opt, value])
        assert opt + " must be a number more than 0" in str(e)
    e = raises(SystemExit, main.main, ["--root", workdir + "/r", "--install", workdir + "/nope.json"])
    assert "cannot read " + workdir + "/nope.json" in str(e)
    svc = Service(learn_time=False)
    machine.reset_sim(time=machine.SimTime(T0))
    root = workdir + "/a/b/flash"
    node = main.main(["--root", root, "--board", ROOT + "/boards/unix/board.json", "--install",
                      ROOT + "/boards/unix/board.json:conf/x/copy.json", "--cycles", "1", "--quiet"],
                     lambda n: FakeAgent(n, svc))
    assert node.st["taken"] == 1 and os.stat(root + "/conf/x/copy.json")[6] > 0


def test_deep_sleeping_node_keeps_sensors_and_dsc_on_flash(workdir):
    # Booted from files (node.json compiled from board.json + settings.json, as deploy installs them): a
    # deep-sleeping node reads the sensors and the DSC from node.json when a phase needs them, and puts
    # the DSC once per node.json and registration, not at every wake's upload.
    fresh()
    svc = Service()
    with open(workdir + "/board.json", "w") as f:
        f.write(json.dumps(board_doc(sleep="deep", sample_s=300, upload_samples=1, upload_s=86400)))
    with open(workdir + "/settings.json", "w") as f:
        f.write(json.dumps(SETTINGS))
    here = os.getcwd()
    os.chdir(workdir)
    seen = []

    def agent(node):
        seen.append(node)
        return FakeAgent(node, svc)

    def wakes(n):
        for _ in range(n):
            hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
            try:
                main.run("board.json", "settings.json", hw, agent, log=lambda m: None)
            except machine.DeepSleep as d:
                machine.reboot(machine.DEEPSLEEP_RESET)
                machine.sim.time.advance(d.ms)

    try:
        wakes(4)
        assert len(svc.readings) == 4 and all("DP-T" in v and "DP-Chip" in v for _, v in svc.readings), (
            svc.readings, svc.flash)
        assert len(svc.dscs) == 1 and svc.dscs[0]["configurationId"]  # from node.json, once
        b = seen[-1].board
        assert b.sensors is None and b.dsc is None  # the boot let go of both (the agent reads them later)
        svc.secret_exp = None  # the service forgot the agent: it onboards again, and configures again
        wakes(1)
        assert len(svc.dscs) == 2
        wakes(1)
        assert len(svc.dscs) == 2 and len(svc.readings) == 6
    finally:
        os.chdir(here)


def test_an_awake_node_configures_again_after_onboarding_again(workdir):
    fresh()
    svc = Service()
    node = boot(workdir, svc, board_doc(sample_s=60, upload_samples=2), cycles=3)
    assert len(svc.dscs) == 1
    svc.secret_exp = None  # the service forgot the agent: the next upload onboards again ...
    for _ in range(4):
        node.sleep(node.step())
    assert svc.secret_exp is not None and len(svc.dscs) == 2  # ... and puts the DSC and mappings again


def test_untrusted_clock_still_wakes_within_a_quarter_of_the_secret_life(workdir):
    # A 20-minute secret, learnt while the clock was right; then a power cut resets the RTC to 2000 and
    # neither NTP nor the server can tell the time: "time to expiry" means nothing, the cap must hold.
    fresh()
    svc = Service(secret_life_s=1200)
    doc = board_doc(sleep="awake", sample_s=3600, upload_samples=1, upload_s=86400)
    node = boot(workdir, svc, doc, cycles=3)
    life_s = node.st["life_s"]
    assert life_s > 0, node.st
    machine.sim.time.set_device_unix_ms((Y2K + 5) * 1000)
    ntptime.reset_sim(failures=-1)
    svc.learn_time = False
    node = boot(workdir, svc, doc, cycles=1, cause=machine.PWRON_RESET)
    assert not node.clock.is_sane()
    # Nothing else due for hours (no held samples, no retry, next sample far): only the cap bounds the wait.
    now = node.clock.now_ms()
    node.pending = []
    node.st["retry_at_ms"] = node.st["fails"] = 0
    node.st["samples"] = 0
    node.st["next_sample_ms"] = node.st["last_upload_ms"] = now + 12 * 3600000
    from runtime import schedule

    wait = schedule.wait_ms(node)
    assert 0 < wait <= life_s * 250, (wait, life_s)


def _upload_wake_node(workdir, **schedule):
    """board.json and settings.json in workdir (node.json compiled from them at the first boot, as deploy
    installs it): a deep-sleeping board whose uploads get a wake of their own (schedule.upload_wake)."""
    doc = board_doc(sleep="deep", sample_s=300, upload_samples=2, upload_s=86400)
    doc["schedule"]["upload_wake"] = True
    doc["schedule"].update(schedule)
    with open(workdir + "/board.json", "w") as f:
        f.write(json.dumps(doc))
    with open(workdir + "/settings.json", "w") as f:
        f.write(json.dumps(SETTINGS))


def _wake(svc, logs, cause=None):
    """One boot from the files in the working directory (after a reset of that cause, if given) until it
    sleeps: the sleep's ms (slept: the next boot is a wake from deep sleep)."""
    if cause is not None:
        machine.reboot(cause)
    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    try:
        main.run("board.json", "settings.json", hw, lambda n: FakeAgent(n, svc), log=logs.append)
    except machine.DeepSleep as d:
        machine.reboot(machine.DEEPSLEEP_RESET)  # asleep: no watchdog, no timers
        machine.sim.time.advance(d.ms)
        return d.ms
    raise AssertionError("the node never went to deep sleep")


def _until_asked(workdir, logs):
    """A node of _upload_wake_node booted by power-on in workdir (made the working directory: the caller
    restores it) and woken until it asks for an upload wake; its Service."""
    fresh()
    svc = Service()
    _upload_wake_node(workdir)
    os.chdir(workdir)
    _wake(svc, logs, machine.PWRON_RESET)
    _wake(svc, logs)
    assert _wake(svc, logs) == 1 and len(svc.flash) == 2  # asked, and asleep for 1 ms
    return svc


def test_an_upload_due_after_deep_sleep_gets_a_wake_of_its_own(workdir):
    """schedule.upload_wake: the wake that finds the upload due records its sample, asks the next boot
    (RTC memory) and deep-sleeps 1 ms; that boot uploads before the node's runtime loads (runtime.upwake),
    then finishes the cycle as any upload does."""
    fresh()
    svc = Service()
    _upload_wake_node(workdir)
    here = os.getcwd()
    os.chdir(workdir)
    logs = []
    try:
        assert _wake(svc, logs, machine.PWRON_RESET) > 1000  # power-on: sample, upload inline
        assert len(svc.readings) == 1 and len(svc.dscs) == 1 and svc.flushes == 1
        assert _wake(svc, logs) > 1000  # one sample: no upload due
        del logs[:]
        assert _wake(svc, logs) == 1  # the second since the upload: due, asked of the next boot
        assert any("upload (samples) left to a wake of its own" in m for m in logs), logs
        assert machine.sim.rtc_memory.startswith(b"MCU1") and svc.flushes == 1 and len(svc.flash) == 2
        assert _state(workdir)["asked"] == "samples"
        del logs[:]
        ms = _wake(svc, logs)  # the upload wake
        assert svc.flushes == 2 and len(svc.readings) == 3 and svc.flash == [], (logs, svc.flash)
        assert logs[0] == "upload (samples): a wake of its own", logs
        assert any("upload (samples) done" in m for m in logs), logs
        st = _state(workdir)
        assert st["asked"] == "" and st["taken"] == 3 and st["uploads"] == 2 and st["samples"] == 0, st
        assert st["sent"] == 3 and st["wakes"] == 3 and st["errors"] == 0, st
        assert machine.sim.rtc_memory.startswith(b"MCN1")
        assert 290000 < ms <= 300000  # the next sample, on its grid
        assert len(svc.dscs) == 1  # configured once for this node.json: the upload wake does not put it
    finally:
        os.chdir(here)


def test_an_upload_wake_that_did_not_end_leaves_the_upload_to_the_next_wake(workdir):
    """The upload wake marks RTC memory as taken; a boot after one that did not end (a watchdog reset)
    does not ask again: it uploads itself. So does a wake whose RTC memory lost the request."""
    here = os.getcwd()
    logs = []
    try:
        svc = _until_asked(workdir, logs)
        svc.flush_script = [("stall", 200000)]  # the upload wake hangs: the watchdog resets the board
        try:
            _wake(svc, logs)
            raise AssertionError("the watchdog did not reset a hung upload wake")
        except machine.WatchdogReset:
            pass
        assert machine.sim.rtc_memory.startswith(b"MCT1")
        del logs[:]
        _wake(svc, logs, machine.WDT_RESET)  # no upload wake after a reset: this one uploads
        assert svc.flash == [] and len(svc.readings) == 3, logs
        assert not any("a wake of its own" in m for m in logs), logs
        assert _state(workdir)["asked"] == ""
        # RTC memory lost (not kept by the port): the next due upload is asked, then done by the wake after
        _wake(svc, logs)
        assert _wake(svc, logs) == 1
        machine.sim.rtc_memory = b""
        del logs[:]
        _wake(svc, logs)  # no request in RTC memory: a usual wake, with the upload still due
        assert svc.flash == [] and not any("a wake of its own" in m for m in logs), logs
    finally:
        os.chdir(here)


def test_an_upload_wake_that_raises_leaves_the_upload_to_the_node(workdir):
    """Whatever the upload wake raises (a MemoryError on a small board), the node still boots and uploads
    in that same boot: a board never stops at the REPL over it."""

    def boom(*args):
        raise MemoryError("simulated")

    here = os.getcwd()
    logs = []
    saved = compat.call_phase
    try:
        svc = _until_asked(workdir, logs)
        compat.call_phase = boom
        _wake(svc, logs)
        assert svc.flash == [] and len(svc.readings) == 3 and svc.flushes == 2, logs
        assert _state(workdir)["asked"] == "" and _state(workdir)["uploads"] == 2
    finally:
        compat.call_phase = saved
        os.chdir(here)


def test_an_error_after_the_upload_wake_s_flush_leaves_the_next_wake_to_upload_itself(workdir):
    """The request stays in the state until the upload wake's cycle ended: an error after its flush (here
    a summary the counters choke on) is a failed cycle (the error streak's pause), and the next wake
    uploads itself instead of asking again every few seconds."""
    here = os.getcwd()
    logs = []
    try:
        svc = _until_asked(workdir, logs)
        svc.flush_script = ["garbled"]
        assert _wake(svc, logs) == 5000  # the first pause of an error streak
        st = _state(workdir)
        assert st["asked"] == "samples" and st["err_row"] == 1 and len(svc.readings) == 3, st
        del logs[:]
        _wake(svc, logs)
        assert not any("a wake of its own" in m for m in logs) and svc.flushes == 3, logs
        st = _state(workdir)
        assert st["asked"] == "" and st["err_row"] == 0 and st["samples"] == 0, st
    finally:
        os.chdir(here)


def test_an_upload_wake_whose_agent_must_register_again_puts_the_dsc(workdir):
    """The service forgot the agent: the upload wake's onboard() registers it anew, so the DSC and
    mappings are due; the node's own upload does them and the flush, in the same boot."""
    here = os.getcwd()
    logs = []
    try:
        svc = _until_asked(workdir, logs)
        svc.secret_exp = None
        _wake(svc, logs)
        assert len(svc.dscs) == 2 and svc.flash == [] and len(svc.readings) == 3, logs
        assert _state(workdir)["asked"] == ""
    finally:
        os.chdir(here)


def test_a_failed_upload_wake_backs_off_like_any_upload(workdir):
    here = os.getcwd()
    logs = []
    try:
        svc = _until_asked(workdir, logs)
        svc.flush_script = ["error"]
        del logs[:]
        ms = _wake(svc, logs)
        assert any("upload (samples) failed" in m for m in logs) and len(svc.flash) == 2, logs
        st = _state(workdir)
        assert st["fails"] == 1 and st["asked"] == "" and 15000 <= ms <= 30000, (st, ms)
        assert _wake(svc, logs) == 1  # the retry: asked of a wake of its own again
        _wake(svc, logs)
        assert svc.flash == [] and len(svc.readings) == 3
    finally:
        os.chdir(here)


def test_unix_board_upload_wake_is_a_run_of_its_own(workdir):
    """On the unix board each `--wake` run is one boot: RTC memory goes from one to the next in a file
    beside the flash, so the run that asks for the upload ends, and the next run uploads first thing."""
    import time

    svc, agent, where = unix_board(workdir)
    board = ["--board", ROOT + "/boards/unix/board.json"]
    main.main(where + board + ["--speed", "300", "--cycles", "1", "--quiet"], agent)
    node = None
    for _ in range(6):  # samples every 0.2 s, upload after 5
        time.sleep(0.25)
        node = main.main(where + ["--speed", "300", "--wake", "--quiet"], agent)
        if node.asked:
            break
    assert node.asked and len(svc.flash) == 5 and node.st["taken"] == 6, (node.st, svc.flash)
    node = main.main(where + ["--speed", "300", "--wake", "--quiet"], agent)
    # (at 300 times the speed the next sample may come before this boot sleeps: it waits awake for it)
    assert len(svc.readings) == 6 and len(svc.flash) == node.st["taken"] - 6 <= 1, svc.flash
    assert node.st["uploads"] == 2 and node.st["asked"] == "", node.st
    rtc = where[1] + ".rtc-memory" if where[0] == "--flash" else where[1] + "/.rtc-memory"
    with open(rtc, "rb") as f:
        assert f.read().startswith(b"MCN1")
    # the run that asks ends its own way when the run's cycles are used up: it uploads what is left
    for _ in range(6):
        time.sleep(0.25)
        node = main.main(where + ["--speed", "300", "--wake", "--quiet"], agent)
        if node.asked:
            break
    assert node.asked
    os.remove(rtc)  # RTC memory lost (a power cut): the next run uploads itself, asking nothing
    node = main.main(where + ["--speed", "300", "--wake", "--quiet", "--cycles", "1"], agent)
    assert not node.asked and node.st["asked"] == "" and svc.flash == [], (node.st, svc.flash)
    # a run that is not one wake from deep sleep is a power-on: RTC memory goes
    with open(rtc, "wb") as f:
        f.write(b"MCU1 stale")
    main.main(where + ["--speed", "300", "--cycles", "1", "--quiet"], agent)
    raises(OSError, open, rtc, "rb")
