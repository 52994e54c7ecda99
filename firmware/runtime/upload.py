"""The upload phase of a wake: Wi-Fi, clock, and the agent's onboard / configure / token / flush, under the
watchdog's budget. Loaded for the upload and released after it; the schedule's code is released before it,
so the wake's heap peak (the flush) holds little more than the agent's data path.
"""

from mcagent import compat


def upload(node, why):
    """Wi-Fi, clock, agent: onboard, configure, token (rotating the secret when due), flush. True if done."""
    b = node.board
    node.boot_upload = False
    ok = False
    err = None
    node.hw.guard(b.upload_budget_ms + b.wifi_attempts * (b.wifi_timeout_ms + b.wifi_backoff_ms) + 60000)
    try:
        if not wifi_up(node):
            err = "no Wi-Fi"
        else:
            node.sync_clock()
            agent = node.agent
            if agent.onboard():
                node.st["configured"] = ""  # a new registration: put the DSC and mappings again
                node.configured = False  # (an awake node keeps its Node: this boot's flag too)
            node.hw.feed()
            node.adopt_learned_time()
            if not node.configured:
                configure(node, agent)
            agent.token()
            node.hw.feed()
            node.adopt_learned_time()
            node.settle()  # the server taught the time: held samples get recorded and go with this flush
            node.release_phases()
            # The flush gets its whole budget, whatever Wi-Fi and NTP took (their tries and pauses are
            # bounded on their own, and a board's settings may let them outlast the first guard).
            node.hw.guard(b.upload_budget_ms + 60000)
            summary = agent.flush()
            ok, err = account(node.st, summary)
            release = getattr(agent, "release", None)
            if release is not None:
                release()  # the upload path's code, until the next upload
    except OSError as e:  # network weather: transport errors, timeouts, DNS
        err = repr(e)
        if type(e).__name__ == "TlsVerifyError":  # not weather: a wrong CA or host; worth the run log
            node.unexpected(e, "upload")
    except Exception as e:
        node.unexpected(e, "upload")
        err = type(e).__name__
    finally:
        node.hw.unguard()
    return ok, err


def configure(node, agent):
    """PUT the DSC and mappings when this agent has not had them from this node.json yet: node.json's
    `sources` digest names its DSC, so a later wake neither reads the DSC from flash nor loads its code."""
    key = getattr(node.board, "sources", None)
    client = getattr(getattr(agent, "config", None), "client_id", None)
    key = key + "/" + client if key and client else None
    if key is None or node.st["configured"] != key:
        # The token first: its code and the handshake are not in the heap beside the DSC read from flash.
        agent.token()
        agent.configure(node.dsc())
        node.st["configured"] = key or ""
    node.configured = True
    node.hw.feed()


def account(st, summary):
    """A flush's summary into the node's counters st: (ok, the error or None)."""
    if not isinstance(summary, dict):
        return True, None
    st["sent"] += summary.get("readings_sent", 0) or 0
    st["retries"] += summary.get("retries", 0) or 0
    dropped = summary.get("dropped")
    if isinstance(dropped, int):
        st["store_dropped"] = dropped
    err = summary.get("error")
    return err is None, err


def wifi_up(node):
    """Connect with bounded tries and backoff; True when up (or when the port needs no Wi-Fi)."""
    net = node.hw.network
    if net is None or not node.settings.ssid:
        return True
    if node.wlan is not None and node.wlan.isconnected():
        return True
    return compat.call_cold("runtime.wifi", "up", node)
