"""Identity end to end: the Agent against `southgate serve` over verified TLS, on CPython and on the
MicroPython Unix port with the firmware compiled to .mpy.

Heap: each [upy] test runs with a 64 KB heap for everything it does at run time (board_heap(HEAP_KB)), as on a
board whose firmware is frozen into flash: on the Unix port .mpy bytecode is loaded into the heap, so
board_heap(HEAP_KB) loads every module first, keeps them, and holds the surplus above 64 KB in a ballast.

Time travel moves southgate's clock (admin setting clock_offset_s) and the agent's (a fake time module)
together, so lifetimes of hours pass in no time. Admin calls share the agent's connection.
"""

import json
import time

from checks import RUNTIME_HEAP_KB, board_heap, raises
from mcagent import Agent, NeedsOnboarding, clock, http, state
from vectors import REGISTER_PATH, TOKEN_PATH

# The tests read southgate's admin API (request counters, settings) on the agent's connection while the
# ballast is held: that scaffolding (a counters answer of ~3 KB in one piece, parsed, several times a test)
# gets 16 KB of its own on top of the agent's 64 KB (8 KB failed once in a loaded CI run).
HEAP_KB = RUNTIME_HEAP_KB + 16
UPY_HEAPSIZE = "384k"  # every mcagent module as .mpy in RAM (board_heap) + the 64 KB run-time budget
UPY_MPY = True
UPY_TIMEOUT = 120

YEARS_10 = 10 * 365 * 86400


class OffsetTime:
    """The real clock shifted by offset_s (a device whose RTC is wrong, or a time traveller)."""

    def __init__(self, offset_s=0):
        self.offset_s = offset_s

    def gmtime(self, t=0):
        return time.gmtime(t)

    def time(self):
        return time.time() + self.offset_s


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Admin:
    """southgate's admin API on a given mcagent.http connection (the only client both interpreters have)."""

    def __init__(self, sg, conn):
        self.conn = conn
        self.auth = "Bearer " + sg["admin_token"]

    def __call__(self, method, path, body=None):
        h = {"Authorization": self.auth}
        if body is not None:
            h["Content-Type"] = "application/json"
            body = json.dumps(body)
        r = self.conn.request(method, path, h, body, 32768)
        assert r.status < 300, "%s %s -> %d %s" % (method, path, r.status, r.body[:300])
        return r.json() if r.body else None

    def fault(self, **spec):
        return self("POST", "/admin/faults", spec)

    def settings(self, **changes):
        return self("PUT", "/admin/settings", changes)

    def travel(self, t, seconds):
        """Move the service and the agent's clock forward together."""
        t.offset_s += seconds
        self.settings(clock_offset_s=t.offset_s)

    def requests(self, method, prefix):
        """Statuses of the agent-side requests since the fixture reset the counters."""
        c = self("GET", "/admin/counters")
        return [
            r["status"] for r in c["per_request"] if r["method"] == method and r["path"].startswith(prefix)
        ]


def make(sg, t=None, state_dir="state", **kw):
    return Agent(
        config=sg["config"],
        state=sg["dir"] + "/" + state_dir,
        ca=[sg["ca_der"]],
        clock=clock.Clock(time_module=t or OffsetTime()),
        **kw,
    )


def note(sg, *agents):
    """For the leak scan (host_tests/test_no_secrets_leak.py): remember what must never be printed."""
    if not sg["sink"]:
        return
    with open(sg["sink"], "a") as f:
        f.write(sg["admin_token"] + "\n")
        for a in agents:
            reg = a.identity.registration() or {}
            for v in [
                reg.get("secret"),
                reg.get("rat"),
                (a.identity._auth or "")[7:] or None,
                a.config.iat or _iat_of(a.config.source),
            ] + [p.get("rat") for p in (a.identity.state.load("previous") or ())]:
                if v:
                    f.write(v + "\n")


def _iat_of(path):
    """The IAT of an agentconfig.json (an onboarded agent no longer holds it: Identity.onboard)."""
    with open(path) as f:
        return json.loads(f.read())["content"]["iat"]


def show(*things):
    """Print what a person would see (reprs, status, error messages): the leak scan reads this output."""
    print("mcagent-e2e-shown:", *[repr(t) if not isinstance(t, str) else t for t in things])


def dsc_for(sg, unit=""):
    # The agent's own id doubles as the asset id, so tests never share a property.
    return {
        "configurationId": "CF-e2e",
        "entityId": sg["agent_id"],
        "propertySetName": "Environment",
        "dataSources": {"DS-board": {"DP-T": ["DOUBLE", "C", "temperature"], "DP-S": ["STRING", unit]}},
    }


def dsc_path(sg):
    return "/api/agentmanagement/v3/agents/%s/dataSourceConfiguration" % sg["agent_id"]


def test_onboard_token_configure_on_one_handshake(sg):
    ballast = board_heap(HEAP_KB)
    a = make(sg)
    adm = Admin(sg, a.conn)
    assert a.onboard() is True
    assert a.onboard() is False
    tok = a.token()
    assert a.token() == tok
    s = a.configure(dsc_for(sg))
    assert s["dsc"] == "put" and s["mappings"] == 1, s
    assert a.conn.handshakes == 1
    assert adm("GET", "/admin/counters")["tls_handshakes"] == 1
    # The service has the DSC with an eTag; a changed DSC goes with If-Match and gets a new eTag.
    doc = a.request("GET", dsc_path(sg)).json()
    assert doc["configurationId"] == "CF-e2e" and len(doc["dataSources"][0]["dataPoints"]) == 2
    etag = doc["eTag"]
    assert a.configure(dsc_for(sg, "K"))["dsc"] == "put"
    doc = a.request("GET", dsc_path(sg)).json()
    assert doc["eTag"] != etag and doc["dataSources"][0]["dataPoints"][0]["unit"] == "K"
    assert adm.requests("PUT", dsc_path(sg)) == [200, 200]
    # The mapping is stored (and kept through the DSC update: keepMapping).
    q = "%7B%22agentId%22%3A%22" + sg["agent_id"] + "%22%7D"
    page = a.request("GET", "/api/mindconnect/v3/dataPointMappings?size=10&page=0&filter=" + q).json()
    assert [m["dataPointId"] for m in page["content"]] == ["DP-T"], page
    assert page["content"][0]["propertyName"] == "temperature"
    assert a.conn.handshakes == 1
    show(a, a.identity, a.config, a.state, a.status())
    note(sg, a)
    del ballast


def test_reboot_sends_nothing_and_lost_state_does_not_put_again(sg):
    ballast = board_heap(HEAP_KB)
    a = make(sg)
    a.configure(dsc_for(sg))
    tok = a.token()
    reg = a.identity.registration()
    note(sg, a)
    a.close()
    del a
    ballast = None
    ballast = board_heap(HEAP_KB)  # a reboot starts with a whole heap (see checks.board_heap)
    # A reboot: onboarded, token cached, DSC unchanged: not one request, no connection at all.
    b = make(sg)
    assert b.onboard() is False and b.token() == tok
    assert b.configure(dsc_for(sg))["dsc"] == "unchanged"
    assert b._conn is None
    del b
    ballast = None
    ballast = board_heap(HEAP_KB)
    # State lost but the registration kept: the service's DSC is compared, found equal, not PUT again.
    c = make(sg, state_dir="s3")
    c.state.save("registration", reg)
    s = c.configure(dsc_for(sg))
    assert s["dsc"] == "same" and s["existing"] == 1, s  # "same": the GET showed it, nothing was PUT
    assert c.conn.requests == 4  # token, GET of the DSC, the mapping (409), it listed as this agent's
    note(sg, c)
    del ballast


def test_rotation_forced_by_a_short_secret_lifetime(sg):
    ballast = board_heap(HEAP_KB)
    t = OffsetTime()
    a = make(sg, t)
    adm = Admin(sg, a.conn)
    adm.settings(secret_lifetime_s=3600)
    a.token()
    first = a.identity.registration()["secret"]
    note(sg, a)
    adm.travel(t, 1900)  # 1700 s of the secret's 3600 s left: past half-life
    a.token()
    reg = a.identity.registration()
    assert reg["secret"] != first and reg["expires_at"] >= int(time.time()) + t.offset_s + 3500
    assert adm.requests("PUT", REGISTER_PATH) == [200]
    note(sg, a)
    adm.travel(t, 1900)  # the new secret earns a token, and is rotated in turn
    a.token()
    assert a.request("GET", dsc_path(sg)).status == 404
    assert adm.requests("POST", TOKEN_PATH) == [200, 200, 200]
    assert adm.requests("PUT", REGISTER_PATH) == [200, 200]
    note(sg, a)
    del ballast


def test_rotation_after_token_400(sg):
    ballast = board_heap(HEAP_KB)
    a = make(sg)
    adm = Admin(sg, a.conn)
    a.onboard()
    first = a.identity.registration()["secret"]
    adm.fault(path=TOKEN_PATH, status=400)
    a.token()
    show(a.status())
    assert a.identity.registration()["secret"] != first
    assert adm.requests("POST", TOKEN_PATH) == [400, 200]
    assert adm.requests("PUT", REGISTER_PATH) == [200]
    assert a.request("GET", dsc_path(sg)).status == 404
    note(sg, a)
    del ballast


def test_recovery_after_the_rotation_answer_is_lost(sg):
    ballast = board_heap(HEAP_KB)
    a = make(sg)
    a.token()
    first = a.identity.registration()["secret"]
    note(sg, a)

    saves = []

    def cut(name):
        if name == "registration":
            saves.append(name)
            if len(saves) == 2:  # the first save marks the rotation pending; the second would keep its answer
                raise OSError(5, "power cut between the answer and its save")

    state.before_commit = cut
    try:
        show(str(raises(OSError, a.identity.rotate)))
    finally:
        state.before_commit = None
    a.close()
    del a
    ballast = None
    ballast = board_heap(HEAP_KB)  # a reboot starts with a whole heap
    b = make(sg)  # after the "reboot": still the old registration; the service already moved on
    adm = Admin(sg, b.conn)
    assert b.identity.registration()["secret"] == first
    b.identity.invalidate_token()
    b.token()
    assert b.identity.registration()["secret"] != first
    assert adm.requests("POST", TOKEN_PATH) == [200, 401, 200]
    assert adm.requests("PUT", REGISTER_PATH) == [200, 200]
    assert b.request("GET", dsc_path(sg)).status == 404
    assert b.conn.handshakes == 1
    note(sg, b)
    del ballast


def test_401_gets_a_new_token(sg):
    ballast = board_heap(HEAP_KB)
    a = make(sg)
    adm = Admin(sg, a.conn)
    a.token()
    adm.fault(path=dsc_path(sg), method="GET", status=401)
    assert a.request("GET", dsc_path(sg)).status == 404
    assert adm.requests("GET", dsc_path(sg)) == [401, 404]
    assert adm.requests("POST", TOKEN_PATH) == [200, 200]
    note(sg, a)
    del ballast


def test_clock_10_years_off_is_corrected_from_the_server(sg):
    ballast = board_heap(HEAP_KB)
    a = make(sg, OffsetTime(-YEARS_10))  # before 2024: never signs before learning the time
    assert not a.clock.is_sane()
    a.token()
    assert abs(a.clock.now_s() - time.time()) < 5
    assert a.configure(dsc_for(sg))["dsc"] == "put"
    note(sg, a)
    a.close()
    del a
    ballast = None
    ballast = board_heap(HEAP_KB)  # a reboot starts with a whole heap
    b = make(sg, OffsetTime(YEARS_10))  # sane-looking but wrong: the 401's Server-Time corrects it
    adm = Admin(sg, b.conn)
    b.state.remove("clock")
    b.identity.invalidate_token()
    b.token()
    assert abs(b.clock.now_s() - time.time()) < 5
    assert adm.requests("POST", TOKEN_PATH) == [200, 401, 200]
    assert adm.requests("PUT", REGISTER_PATH) == []  # no needless rotation
    assert make(sg, OffsetTime(YEARS_10)).token() == b.identity.token()  # the correction is kept
    note(sg, b)
    del ballast


def test_locked_out_then_reonboarded_with_a_new_config(sg):
    ballast = board_heap(HEAP_KB)
    t = OffsetTime()
    a = make(sg, t)
    adm = Admin(sg, a.conn)
    adm.settings(secret_lifetime_s=3600)
    a.token()
    note(sg, a)
    adm.travel(t, 7300)  # slept through the secret's expiry
    e = raises(NeedsOnboarding, a.token)
    assert "agentconfig.json" in str(e) and "locked out" in str(e)
    show(str(e), a.status())
    cfg = adm("GET", "/admin/agents/%s/config" % sg["agent_id"])  # a new IAT for the same agent
    with open(sg["config"], "w") as f:
        f.write(json.dumps(cfg))
    a.close()
    del a, cfg, e
    ballast = None
    ballast = board_heap(HEAP_KB)  # the node restarts with the new agentconfig.json: a whole heap again
    b = make(sg, t)
    adm.conn = b.conn
    b.token()
    assert b.configure(dsc_for(sg))["dsc"] == "put"
    assert adm.requests("POST", REGISTER_PATH) == [201, 201]
    note(sg, b)
    del ballast


def test_through_a_connect_proxy(sg, identity_proxy):
    ballast = board_heap(HEAP_KB)
    bad = make(sg, state_dir="s-bad", proxy=identity_proxy["bad_url"])
    e = raises(http.ProxyError, bad.onboard)
    assert e.status == 407 and "p@ss" not in str(e) and "wrong" not in str(e)
    show(str(e))
    del bad, e
    ballast = None
    ballast = board_heap(HEAP_KB)  # the first agent is gone: the second starts on a whole heap
    a = make(sg, proxy=identity_proxy["url"])
    adm = Admin(sg, a.conn)
    assert a.onboard() is True
    a.token()
    assert a.configure(dsc_for(sg))["dsc"] == "put"
    assert a.conn.handshakes == 1
    assert adm.requests("POST", TOKEN_PATH) == [200]
    note(sg, a)
    del ballast


def test_wrong_ca_wrong_host_expired_certificate_refused_before_any_request(sg, bad_certs):
    ballast = board_heap(HEAP_KB)
    a = Agent(config=sg["config"], state=sg["dir"] + "/s1", ca=[bad_certs["expired"]["ca_der"]])
    raises(http.TlsVerifyError, a.onboard)
    assert a.identity.registration() is None
    good = make(sg, state_dir="s2")
    assert Admin(sg, good.conn).requests("POST", "/api/") == []
    for name in ("wrong_host", "expired"):
        b = bad_certs[name]
        a = Agent(config=b["config"], state=sg["dir"] + "/s-" + name, ca=[b["ca_der"]])
        show(str(raises(http.TlsVerifyError, a.onboard)))
        raises(http.TlsVerifyError, a.token)
        assert b"/api/" not in read(b["log"]), name
    del ballast
