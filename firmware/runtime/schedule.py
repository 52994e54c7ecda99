"""When things are due: samples, uploads and their retries, the health event, the secret's rotation, and how
long the node may sleep. Functions of the node's saved schedule (node.st), its board and clock.

Loaded while a cycle decides and released before its upload (the heap peak of a wake): see runtime.node.
"""

from micropython import const

from mcagent import compat
from mcagent.clock import iso_ms

_MAX_WAIT_MS = const(43200000)  # 12 h: wake at least this often (clock check, rotation window, ticks wrap)
_ROTATE_WINDOW_MAX_S = const(3600)  # wake at the latest this long before the secret expires
_RETRY_BASE_MS = const(30000)
_JUMP_MS = const(1500)  # a clock change larger than this moves the schedule with it
_MOVABLE = const(
    ("next_sample_ms", "last_upload_ms", "retry_at_ms", "last_health_ms", "rot_check_ms", "ntp_ms")
)


def settle(node):
    """Notice clock changes (NTP, a learned Date): move the schedule and held samples with them, and
    record held samples once the time is known."""
    hw = node.hw
    t = hw.ticks_ms()
    c = node.clock.now_ms()
    if node.ref is not None:
        jump = (c - node.ref[1]) - hw.ticks_diff(t, node.ref[0])
        if jump > _JUMP_MS or jump < -_JUMP_MS:
            st = node.st
            for k in _MOVABLE:
                if st[k]:
                    st[k] += jump
            for p in node.pending:
                p[0] += jump
            node.log("clock moved by %d s" % (jump // 1000))
    node.ref = (t, c)
    if node.pending and node.clock.is_sane():
        compat.load("runtime.sampling").record_pending(node)


def read_secret(node, force=False):
    """(expires_at, rotation_due_at) in Unix seconds, (None, None) if none: as the node saved them, or from
    the agent when forced (after an upload) or never asked yet. Only an upload changes them (a token, a
    rotation, onboarding), so a wake that only samples does not load the agent's identity. Saved in
    st["secret_exp"]: 0 never asked, -1 the agent has none (not onboarded, or a secret without expiry)."""
    st = node.st
    exp = st["secret_exp"]
    if not force and exp:
        return (exp, st["rot_due"] or None) if exp > 0 else (None, None)
    a = node.agent
    try:
        fn = getattr(a, "secret_expires_at", None)
        if fn is not None:
            exp = fn() if callable(fn) else fn
            due = getattr(a, "rotation_due_at", None)
            due = due() if callable(due) else due
        else:
            status = getattr(a, "status", None)
            s = status() if status is not None else {}
            exp = s.get("secret_expires_at")
            due = s.get("rotation_due_at")
    except Exception as e:  # status must never stop the node: what it said last time stands
        node.log("secret expiry unknown: %r" % (e,))
        return (st["secret_exp"], st["rot_due"] or None) if st["secret_exp"] > 0 else (None, None)
    if not exp:  # none: no rotation to wake for (until an upload tells otherwise)
        st["secret_exp"] = -1
        st["rot_due"] = st["life_s"] = 0
        return None, None
    st["rot_due"] = due or 0
    now_s = node.clock.now_s()
    if st["secret_exp"] > 0 and exp != st["secret_exp"]:
        st["rotations"] += 1
        node.log("secret rotated; it now expires %s" % iso_ms(exp * 1000))
    if exp != st["secret_exp"]:
        st["secret_exp"] = exp
        st["life_s"] = max(0, exp - now_s)
    return exp, due


def rotate_at_ms(node):
    """When the node must be awake to let the agent rotate the secret, or None."""
    exp, due = node.secret
    if not exp:
        return None
    st = node.st
    window = min(_ROTATE_WINDOW_MAX_S, max(1, st["life_s"] // 4))
    at = exp - window
    if due and due < at:
        at = due
    at *= 1000
    if st["rot_check_ms"]:
        # The agent was asked since the due time and did not rotate: ask again, ever more often.
        gap = max(60000, (exp * 1000 - st["rot_check_ms"]) // 4)
        at = max(at, st["rot_check_ms"] + gap)
    return at


def health_due(node, now):
    if not node.clock.is_sane():
        return False
    return node.health_boot or now - node.st["last_health_ms"] >= node.board.health_ms


def upload_due(node, now):
    """Why an upload is due now ("boot", "retry", "samples", "period", "clock", "secret"), or None."""
    st = node.st
    b = node.board
    if node.boot_upload:
        return "boot"
    if now < st["retry_at_ms"]:
        return None
    if st["fails"]:  # the last upload failed and its pause is over ("next try in N s")
        return "retry"
    if b.upload_samples and st["samples"] >= b.upload_samples:
        return "samples"
    if b.upload_ms and now - st["last_upload_ms"] >= b.upload_ms:
        return "period"
    if node.pending:
        return "clock"
    rot = rotate_at_ms(node)
    if rot is not None and now >= rot:
        return "secret"
    return None


def backoff_ms(board, fails):
    """Exponential with jitter (50-100 %): nodes that lost the same access point do not return in step."""
    cap = board.retry_cap_ms
    wait = min(cap, _RETRY_BASE_MS << min(fails - 1, 16))
    r = compat.urandom(2)
    return wait // 2 + (wait // 2) * ((r[0] << 8) | r[1]) // 65535


def after_upload(node, ok, err, why):
    """The schedule after an upload: done (next one by the board's rules) or failed (retry with backoff,
    denser as the secret's expiry nears, never past it)."""
    settle(node)
    now = node.clock.now_ms()
    node.secret = read_secret(node, True)
    st = node.st
    if ok and node.pending:  # uploaded, yet still no time for the held samples: try again later
        ok = False
        err = "the time is still unknown (no NTP, no Date from the server)"
    if ok:
        st["last_upload_ms"] = now
        st["samples"] = 0
        st["fails"] = 0
        st["retry_at_ms"] = 0
        st["uploads"] += 1
        st["rot_check_ms"] = 0
        rot = rotate_at_ms(node)
        if rot is not None and now >= rot:  # asked while due, and the agent did not rotate: ask later
            st["rot_check_ms"] = now
        node.log("upload (%s) done" % why)
    else:
        st["fails"] += 1
        st["retries"] += 1
        wait = backoff_ms(node.board, st["fails"])
        exp = node.secret[0]
        if exp:
            left = exp * 1000 - now
            if left > 0:
                wait = min(wait, max(5000, left // 2))
        st["retry_at_ms"] = now + wait
        node.log("upload (%s) failed: %s; next try in %d s" % (why, err, wait // 1000))
    return ok


def wait_ms(node):
    """ms until the next thing is due: a sample, an upload (or its retry), the secret's rotation."""
    st = node.st
    b = node.board
    now = node.clock.now_ms()
    wake = st["next_sample_ms"]
    if b.upload_ms:
        wake = min(wake, max(st["last_upload_ms"] + b.upload_ms, st["retry_at_ms"]))
    if (b.upload_samples and st["samples"] >= b.upload_samples) or node.pending or st["fails"]:
        wake = min(wake, max(st["retry_at_ms"], now))
    limit = _MAX_WAIT_MS
    rot = rotate_at_ms(node)
    if rot is not None:
        wake = min(wake, max(rot, st["retry_at_ms"]))
        exp_ms = node.secret[0] * 1000
        if exp_ms > now:
            # Hard cap: whatever else says, wake while at least half the time to expiry remains.
            limit = min(limit, max(1000, (exp_ms - now) // 2 if rot <= now else rot - now))
        if not node.clock.is_sane() and st["life_s"]:
            # The clock is not to be trusted (RTC reset, no NTP yet): "time to expiry" means nothing,
            # so wake at least four times per secret lifetime.
            limit = min(limit, max(1000, st["life_s"] * 250))
    return max(0, min(wake - now, limit))
