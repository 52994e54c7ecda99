"""Cold path of the store: counting the backlog, reporting the counters (Store.stats, pending_count).

Apart from mcagent.store because an upload asks for them once, at its end (the summary), and a status
report once: imported for the call and unloaded right after (compat.call_cold), so the code an upload keeps
in the heap while it streams records is only the reading and acknowledging.
"""

from mcagent import kinds


def count(r):
    """Records per kind (index = code - 1) a Reader yields (it is read to its end)."""
    counts = [0] * len(kinds.NAMES)
    while True:
        rec = r.next()
        if rec is None:
            return counts
        counts[rec.kind - 1] += 1


def stats(st, scan, full):
    """Store.stats: counters (persisted) plus pending counts (None if unknown and scan is False) and flash
    use; only the pending records per kind when not full."""
    if st._pending is None and scan:
        st._pending = count(st.reader())
    p = st._pending or [None] * len(kinds.NAMES)
    if not full:
        return p
    out = dict(st.counters)
    for i in range(len(p)):
        out["pending_" + kinds.NAMES[i]] = p[i]
    out["segments"] = max(0, st._hi - st._lo + 1)
    out["max_segments"] = st.max_segments
    out["cursor"] = st.cursor
    out["commits"] = st.commits
    return out
