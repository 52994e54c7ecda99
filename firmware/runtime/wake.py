"""Boot phase of a wake: state from flash (or RTC memory), the crash streak, the agent, watchdog, sensors.

Runs once per wake and is released after it (mcagent.compat.call_cold).
"""

from micropython import const

from mcagent import compat
from runtime.hw import MARKS
from runtime.node import ERR_CAP_MS, NODE_DIR, PERIOD_KEYS, STAT_KEYS, SensorSlot

_CRASH_STREAK = const(3)  # watchdog/brownout resets in a row before boots are spaced out
_CRASHY = const(("WDT_RESET", "BROWNOUT_RESET"))


def fresh_state(now):
    st = {
        "v": 1,
        "seq": 0,
        "boots": 0,
        "wakes": 0,
        "saved_ms": now,
        "next_sample_ms": now,
        "last_upload_ms": now,
        "retry_at_ms": 0,
        "fails": 0,
        "samples": 0,
        "last_health_ms": 0,
        "ntp_ms": 0,
        "rot_check_ms": 0,
        "secret_exp": 0,  # the secret's expiry and rotation time (Unix s) as the agent told the last upload
        "rot_due": 0,  # (runtime.schedule.read_secret: secret_exp 0 = never asked, -1 = none)
        "life_s": 0,
        "crash": 0,
        "min_heap": -1,
        "configured": "",
        "err_row": 0,  # cycles in a row that ended in an unexpected exception (Node.step's backoff)
        "asked": "",  # why the upload was left to the next wake (runtime.cycle.start, runtime.upwake)
    }
    for k in STAT_KEYS + PERIOD_KEYS:
        st[k] = 0
    return st


def default_agent(node):
    """The real agent, sharing the node's clock (so both see the time the server taught)."""
    from mcagent import Agent

    s = node.settings
    b = node.board
    return Agent(
        # read at power-on (a wrong file keeps the node at the REPL), on a wake from deep sleep when the
        # upload first needs it (Node.agent_config: a function of this module would keep it in the heap)
        config=node.path(s.agentconfig) if node.cold else node.agent_config,
        state=node.path(s.state_dir),
        ca=node.path("certs/") if s.ca is None else [node.path(c) for c in s.ca],  # certs/: its .der files
        proxy=s.proxy,
        clock=node.clock,
        store=node.path("store"),
        dsc=node.dsc,
        store_options=dict(b.store),
    )


def boot(node):
    """Load state, make the agent, start the watchdog, set up sensors. Config errors raise before the
    watchdog starts, so a node with a wrong file waits at the REPL instead of resetting forever (after an
    upload wake, whose watchdog runs already, it resets once: the next boot is a cold one, and waits)."""
    from mcagent.state import State

    node.state = State(node.path(NODE_DIR))
    node.st = load_state(node)
    st = node.st
    st["boots"] += 1
    if not node.cold:
        st["wakes"] += 1
    if node.cause in _CRASHY:
        st["crash"] += 1
        node.save_state()  # count it even if this boot dies again before its first save
    elif node.cold:
        st["crash"] = 0
    node.agent = (node.agent_factory or default_agent)(node)
    shared = getattr(node.agent, "clock", None)
    if shared is not None:
        node.clock = shared
    b = node.board
    if compat.call_cold("runtime.hwcold", "start_watchdog", node.hw, b.watchdog_ms):
        node.timer = compat.call_cold(
            "runtime.hwcold", "timer", node.hw, max(1000, b.watchdog_ms // 4), node.hw.tick
        )
    node.ref = (node.hw.ticks_ms(), node.clock.now_ms())
    if b.sensors is not None:
        b.n_sensors = len(b.sensors)
    if b.sleep != "deep":
        for s in b.sensors:
            slot = SensorSlot(s)
            node.sensors.append(slot)
            compat.load("runtime.sampling").init_sensor(node, slot)
    elif getattr(b, "node_json", None):
        # A deep-sleeping node makes its drivers when it samples and drops them after; the sensors' and
        # the DSC's part of node.json are read again when needed (runtime.sampling, Node.dsc).
        b.sensors = b.dsc = None
    else:
        node.sensors = [SensorSlot(s) for s in b.sensors]
    node.log(
        "boot %d (%s) board %s, %d sensors, sleep %s"
        % (st["boots"], node.cause, b.name, b.n_sensors, b.sleep)
    )
    if st["crash"] >= _CRASH_STREAK and node.cold:
        wait = min(ERR_CAP_MS, 60000 << min(st["crash"] - _CRASH_STREAK, 6))
        node.log("%d resets in a row: waiting %d s before working" % (st["crash"], wait // 1000))
        node.save_state()
        node.sleep(wait)


def load_state(node):
    """The schedule and counters saved by the last wake (flash, or RTC memory when it is newer)."""
    now = node.clock.now_ms()
    st = node.state.load("state")
    hint = read_hint(node)
    if hint is not None and (st is None or hint.get("seq", 0) > st.get("seq", 0)):
        st = hint  # flash missed the last save (full, or cut): the RTC copy is newer
    fresh = fresh_state(now)
    if not isinstance(st, dict) or st.get("v") != 1:
        return fresh
    for k in fresh:
        if k not in st:
            st[k] = fresh[k]
    if st["saved_ms"] > now + 300000:
        # The clock went backwards (power loss reset the RTC): the saved times belong to another
        # timeline. Start the schedule afresh; counters stay.
        for k in (
            "next_sample_ms",
            "last_upload_ms",
            "retry_at_ms",
            "last_health_ms",
            "ntp_ms",
            "rot_check_ms",
        ):
            st[k] = fresh[k]
    if node.cold:
        st["retry_at_ms"] = 0
    return st


def read_hint(node):
    """The copy of the state in RTC memory (survives deep sleep, not a power cut), or None."""
    try:
        data = node.hw.rtc_memory()
        if bytes(data[:4]) not in MARKS:  # the state, maybe with an upload request (runtime.hw)
            return None
        from mcagent.state import decode

        value = decode(bytes(data[4:]))
        return value if isinstance(value, dict) else None
    except Exception:  # a hint is only a hint
        return None
