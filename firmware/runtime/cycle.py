"""The order of one cycle, before and after its upload, and how a node rests between cycles.

A phase module (Node.cycle loads it, Node.release_phases releases it): its code is not in the heap while the
upload runs, the wake's peak. The upload itself is Node.upload, called between start() and end(), names
the VM has already (each new name stays in the heap for the rest of the wake).
"""

from micropython import const

from mcagent import compat

_SAVE_EVERY = const(10)  # awake mode: save the schedule every this many cycles (flash wear)


def start(node):
    """Settle the clock, take the sample when due, queue the health event: why an upload is due, or None."""
    b = node.board
    st = node.st
    node.hw.feed()
    sch = compat.load("runtime.schedule")
    sch.settle(node)
    node.secret = sch.read_secret(node)
    now = node.clock.now_ms()
    if now >= st["next_sample_ms"]:
        deep = b.sleep == "deep"
        if deep:
            # The schedule's code is not held while the store opens (a sampling wake's peak): loaded
            # again for what is due after the sample.
            sch = None
            compat.unload("runtime.schedule")
        sampling = None
        try:
            sampling = compat.load("runtime.sampling")
            sampling.sample(node, now)
        except Exception as e:  # the slot is spent all the same; the upload after it must still happen
            node.unexpected(e, "sample")
        if deep and sampling is not None:
            sampling.release_sensors(node)
        sampling = None
        nxt = st["next_sample_ms"] + b.sample_ms
        if nxt <= now:  # slots missed (a long upload, a clock jump): restart the grid from now
            nxt = now + b.sample_ms
        st["next_sample_ms"] = nxt
        if sch is None:
            sch = compat.load("runtime.schedule")
    if sch.health_due(node, now):
        try:
            compat.call_cold("runtime.health", "queue_health", node, now)
        except Exception as e:
            node.unexpected(e, "health")
    why = sch.upload_due(node, now)
    sources = getattr(b, "sources", None)
    if (
        why
        and getattr(b, "upload_wake", False)
        and not node.cold
        and not node.pending
        and not st["asked"]
        and sources
        and st["configured"].startswith(sources + "/")
        and node.device_sane()
    ):
        # Left to a wake of its own (runtime.upwake), whose heap holds the agent's path and little
        # more: asked in RTC memory with the state, saved before the 1 ms deep sleep this wake ends
        # with (end, sleep). Only a wake from deep sleep of a node configured for this node.json, its
        # clock set, no samples held in RAM; not while an earlier request is outstanding (st["asked"]:
        # its upload wake declined or did not end, or RTC memory lost it): that wake uploads itself.
        st["asked"] = why
        node.asked = True
        node.log("upload (%s) left to a wake of its own" % why)
        return None
    return why


def uploaded(node, up):
    """The rest of an upload wake's cycle (runtime.upwake flushed before the node booted): its counters,
    NTP when due (unless Wi-Fi failed), the schedule after an upload, the state; ms to wait. When the
    agent had to register anew, the DSC and mappings are due: the node's own upload does them, and the
    flush. The request (st["asked"]) is cleared only with the state this saves: should any of it raise,
    the next wake uploads itself, and the error streak's pauses grow as for any failing cycle."""
    summary, err, why, wlan, exc, tries, _ = up
    st = node.st
    node.wlan = wlan
    node.boot_upload = False
    st["retries"] += tries
    if exc is not None:
        node.unexpected(exc, "upload")
    if err == "registered anew":  # runtime.upwake
        st["configured"] = ""
        node.configured = False
        node.upload(why)
        return end(node, why)
    ok = False
    if summary is not None:
        ok, err = compat.call_cold("runtime.upload", "account", st, summary)
    if err != "no Wi-Fi":  # runtime.upsetup's (and runtime.upload's) error when Wi-Fi did not come up
        node.sync_clock()
    compat.load("runtime.schedule").after_upload(node, ok, err, why)
    st["asked"] = ""
    node.save_state()
    return end(node, why)


def end(node, why):
    """After the cycle's upload (if any): note the heap, save now and then when awake; ms to wait (1 when
    the upload was left to the next wake)."""
    node.note_heap()
    node.st["crash"] = 0
    if node.asked:
        return 1
    if not why and node.board.sleep != "deep" and node.cycles % _SAVE_EVERY == 0:
        node.save_state()
    return compat.load("runtime.schedule").wait_ms(node)


def sleep(node, ms):
    """Rest ms: in deep sleep when the board sleeps deep and nothing waits in RAM, awake otherwise."""
    if ms <= 0:
        return
    b = node.board
    if b.sleep == "deep" and (ms >= b.min_deep_ms or node.asked) and not node.pending:
        deep_sleep(node, ms)
    node.wait(ms)


def deep_sleep(node, ms):
    """Save everything, radio off, sleep; waking is a reboot that resumes from flash. The readings are
    committed (close) before the schedule that counts them is saved: a cut between the two then costs a
    sample taken again, not a reading lost."""
    close(node)
    node.save_state()
    node.log("deep sleep %d ms" % ms)
    node.hw.deepsleep(ms)


def close(node):
    if node.wlan is not None:
        try:
            node.wlan.active(False)
        except Exception:
            pass
    fn = getattr(node.agent, "close", None)
    if fn is not None:
        try:
            fn()
        except Exception:
            pass


def finish(node):
    """Before stopping on purpose (the unix board's end of run): upload what is left, save."""
    st = node.st
    if st["taken"] and (st["samples"] or node.pending):
        node.upload("final")
    else:
        node.save_state()
    close(node)
