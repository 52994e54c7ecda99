"""The health event: once per cold boot and daily, what a person looking after the node wants to know; and
the summary of a unix board's run.

Released after use (mcagent.compat.call_cold).
"""

from runtime.node import PERIOD_KEYS, STAT_KEYS


def note_dropped(node):
    """The store's count of readings its capacity policy dropped, as it is now (an outage is when they
    are dropped, and no flush summary reports them then)."""
    fn = getattr(node.agent, "dropped", None)
    n = fn() if fn is not None else None
    if n is not None:
        node.st["store_dropped"] = n


def queue_health(node, now):
    """The health event (local: it leaves with the next upload)."""
    from mcagent import VERSION

    st = node.st
    node.note_heap()
    note_dropped(node)
    details = {
        "reset_cause": node.cause,
        "boots": st["boots"],
        "wakes": st["wakes"],
        "min_free_heap": st["min_heap"],
        "dropped_readings": st["dropped"] + st["store_dropped"],
        "retries": st["retries"],
        "errors": st["errors"],
        "sensor_errors": st["sensor_errors"],
        "readings_sent": st["sent"],
        "firmware": VERSION,
        "board": node.board.name,
    }
    node.agent.event(3, "health: %s, firmware %s on %s" % (node.cause, VERSION, node.board.name), details)
    st["last_health_ms"] = now
    node.health_boot = False
    for k in PERIOD_KEYS:
        st[k] = 0
    st["min_heap"] = -1
    node.log("health event queued")


def summary(node):
    """What a run of the unix board did, for its last line (runtime.power): boots, wakes, the counters."""
    note_dropped(node)
    st = node.st
    out = {"board": node.board.name, "boots": st["boots"], "wakes": st["wakes"]}
    for k in STAT_KEYS + PERIOD_KEYS:  # the period's: since the last health event
        out[k] = st[k]
    out["pending_clock"] = len(node.pending)
    out["last_ts"] = node.last_ts
    out["last_values"] = node.last_values
    return out
