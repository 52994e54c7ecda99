"""Identity, DSC and Agent against an in-process fake MindConnect service (no network).

The fake follows docs/protocol.md §A-§C, §E the way southgate does: single-use IAT, secrets with a lifetime,
old secret refused after rotation, previous registration token allowed to rotate again until the new secret
has been used, assertion time checked against the service clock (±300 s). Both clocks are fake, so time
travel costs nothing.
"""

import json
import os
import sys

from checks import b64url_decode, raises
from mcagent import (
    Agent,
    NeedsOnboarding,
    cjson,
    clock,
    compat,
    config,
    dsc,
    dscput,
    enroll,
    identity,
    jwt,
    state,
    token,
)
from mcagent.http import HttpError, TransportError
from vectors import MAPPINGS_PATH, REGISTER_PATH, TOKEN_KEY_PATH, TOKEN_PATH

CLIENT = "00112233445566778899aabbccddeeff"
T0 = 1767225600  # 2026-01-01T00:00:00Z
DAY = 86400


class FakeTime:
    """A time module for clock.Clock: port epoch 1970 or 2000, settable seconds."""

    def __init__(self, unix_s, epoch=1970):
        self.epoch = epoch
        self.unix_s = unix_s

    def gmtime(self, t=0):
        return (self.epoch, 1, 1, 0, 0, 0, 0, 1)

    def time(self):
        return self.unix_s - (946684800 if self.epoch == 2000 else 0)


class Resp:
    """What the agent reads of an http.Response (reason and what: for the messages of httputil.http_error)."""

    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.reason = "Fake"
        self.what = "a request"
        self.body = body
        self.headers = headers or {}
        self.truncated = False

    def json(self):
        return json.loads(self.body)


def _unquote(text):
    """%XX escapes of a query decoded (no urllib on MicroPython)."""
    out = bytearray()
    raw = text.encode()
    i = 0
    while i < len(raw):
        if raw[i] == 37:  # %
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out).decode()


def _jdump(doc):
    return json.dumps(doc).encode()


ORIGIN = "https://gw.example.com"


class FakeService:
    """Just enough MindConnect to exercise identity and DSC; also the `conn` given to the agent."""

    def __init__(self, iat="a.b.c", now=T0, secret_life=7 * DAY, token_life=1800):
        self.now = now
        self.iats = {iat: False}  # iat -> used
        self.secret_life = secret_life
        self.token_life = token_life
        self.secret = None
        self.secret_exp = 0
        self.rat = None
        self.prev_rat = None
        self.new_secret_used = True
        self.gen = 0
        self.log = []
        self.faults = []  # (path prefix, status)
        self.rotation_origin = ORIGIN  # where registration_client_uri points
        self.send_date = True
        self.tokens = []
        self.dsc = None
        self.etag = 0
        self.mappings = []
        self.foreign = []  # (entity, aspect, property) mapped by another agent
        self.mapping_page = None  # the body of a mapping list, instead of the real one
        self.handshakes = 1
        self.closed = False

    # -- helpers for tests --
    def count(self, method, prefix):
        return len([1 for m, p, h, b in self.log if m == method and p.startswith(prefix)])

    def fault(self, prefix, status, method=None):
        self.faults.append((prefix, status, method))

    def new_iat(self, iat):
        self.iats[iat] = False

    def close(self):
        self.closed = True

    # -- the connection interface --
    def request(self, method, path, headers=None, body=None, max_body=4096):
        headers = headers or {}
        if path.startswith(ORIGIN):  # an absolute URL on this service (the registration_client_uri)
            path = path[len(ORIGIN) :]
        elif "://" in path:  # as http.Connection: another origin is not this connection's
            raise ValueError("URL not on this connection's origin")
        if hasattr(body, "write_to"):  # a streaming body (the DSC): the bytes a server would read
            parts = []
            body.write_to(lambda piece: parts.append(bytes(piece)))
            assert sum(len(p) for p in parts) == body.length
            body = b"".join(parts)
        self.log.append((method, path, headers, body))
        resp = self._answer(method, path, headers, body)
        if self.send_date:
            resp.headers["date"] = clock.http_date(self.now)
        return resp

    def _answer(self, method, path, headers, body):
        for i in range(len(self.faults)):
            prefix, status, only = self.faults[i]
            if path.startswith(prefix) and only in (None, method):
                self.faults.pop(i)
                if status == 0:
                    raise TransportError("injected: connection reset")
                if status == -1:  # the service acts on the request, its answer is lost on the way back
                    self._answer(method, path, headers, body)
                    raise TransportError("injected: answer lost")
                return Resp(status, b'{"id":"x","message":"injected"}')
        auth = headers.get("Authorization", "")
        bearer = auth[7:] if auth.startswith("Bearer ") else None
        if path == REGISTER_PATH and method == "POST":
            if bearer not in self.iats or self.iats[bearer]:
                return Resp(401, b'{"id":"1","message":"bad iat"}')
            assert body == b"{}"
            self.iats[bearer] = True
            self.prev_rat = None
            return self._issue(201)
        if path == REGISTER_PATH + "/" + CLIENT and method == "PUT":
            assert json.loads(body) == {"client_id": CLIENT}
            if bearer is not None and (
                bearer == self.rat or (bearer == self.prev_rat and not self.new_secret_used)
            ):
                if bearer == self.rat:
                    self.prev_rat = self.rat
                return self._issue(200)
            return Resp(401, b'{"id":"2","message":"bad registration token"}')
        if path == TOKEN_PATH and method == "POST":
            return self._token(body.decode())
        if path == TOKEN_KEY_PATH:
            return Resp(200, b'{"kty":"RSA"}')
        if path.startswith("/api/agentmanagement/v3/agents/" + CLIENT + "/dataSourceConfiguration"):
            if bearer not in self.tokens:
                return Resp(401, b"{}")
            return self._dsc(method, headers, body)
        if path.startswith(MAPPINGS_PATH + "?filter=") and method == "GET":
            if bearer not in self.tokens:
                return Resp(401, b"{}")
            flt = json.loads(_unquote(path.split("?filter=", 1)[1]))
            assert flt["agentId"] == CLIENT, flt
            key = (flt["dataPointId"], flt["entityId"], flt["propertySetName"], flt["propertyName"])
            if self.mapping_page is not None:
                return Resp(200, self.mapping_page)
            names = ("dataPointId", "entityId", "propertySetName", "propertyName")
            content = [dict(zip(names, key), agentId=CLIENT)] if key in self.mappings else []
            return Resp(200, _jdump({"content": content, "totalElements": len(content)}))
        if path == MAPPINGS_PATH and method == "POST":
            if bearer not in self.tokens:
                return Resp(401, b"{}")
            m = json.loads(body)
            key = (m["dataPointId"], m["entityId"], m["propertySetName"], m["propertyName"])
            assert m["agentId"] == CLIENT and m["keepMapping"] is True
            if key in self.mappings:
                return Resp(409, b'{"message":"exists"}')
            if key[1:] in self.foreign:  # the property takes another agent's data point
                return Resp(409, b'{"message":"property already takes data point \'DP-X\'"}')
            if m["propertyName"] == "nope":
                return Resp(400, b'{"id":"3","message":"no such property"}')
            self.mappings.append(key)
            return Resp(201, _jdump(m))
        if path == "/echo":
            return Resp(200 if bearer in self.tokens else 401, b"{}")
        return Resp(404, b"{}")

    def _issue(self, status):
        self.gen += 1
        self.secret = "secret-%d-%s" % (self.gen, "x" * 20)
        self.secret_exp = self.now + self.secret_life
        self.rat = "rat-%d" % self.gen
        self.new_secret_used = False
        doc = {
            "client_id": CLIENT,
            "client_secret": self.secret,
            "client_secret_expires_at": self.secret_exp,
            "grant_types": ["client_credentials"],
            "registration_access_token": self.rat,
            "registration_client_uri": self.rotation_origin + REGISTER_PATH + "/" + CLIENT,
            "token_endpoint_auth_method": "client_secret_jwt",
        }
        return Resp(status, _jdump(doc))

    def _token(self, form):
        pairs = [p.split("=", 1) for p in form.split("&")]
        names = [p[0] for p in pairs]
        assert names == ["grant_type", "client_assertion_type", "client_assertion"], names
        assertion = pairs[2][1]
        head, claims, sig = assertion.split(".")
        if self.secret is None:
            return Resp(401, b'{"error":"invalid_client"}')
        good_sig = jwt.b64url(jwt.hmac_sha256(self.secret.encode(), (head + "." + claims).encode())).decode()
        if sig != good_sig:
            return Resp(401, b'{"error":"invalid_client","error_description":"bad signature"}')
        c = json.loads(b64url_decode(claims))
        assert c["iss"] == CLIENT and c["sub"] == CLIENT and c["ten"] == "acme" and c["aud"] == ["southgate"]
        if abs(c["iat"] - self.now) > 300:
            return Resp(401, b'{"error":"invalid_client","error_description":"time"}')
        if self.now >= self.secret_exp:
            return Resp(400, b'{"error":"invalid_client","error_description":"secret expired"}')
        self.new_secret_used = True
        self.prev_rat = None
        tok = "access-%d-%d" % (self.gen, len(self.tokens))
        self.tokens.append(tok)
        return Resp(
            200,
            _jdump({"access_token": tok, "token_type": "bearer", "expires_in": self.token_life}),
            {"server-time": clock.iso_ms(self.now * 1000)},
        )

    def _dsc(self, method, headers, body):
        if method == "GET":
            if self.dsc is None:
                return Resp(404, b'{"message":"none"}')
            return Resp(200, _jdump(self.dsc))
        if method == "PUT":
            if headers.get("If-Match") != str(self.etag):
                return Resp(412, b'{"message":"etag"}')
            doc = json.loads(body)
            self.etag += 1
            doc["id"] = "dsc-id"
            doc["eTag"] = str(self.etag)
            self.dsc = doc
            return Resp(200, _jdump(doc))
        return Resp(405, b"")


def write_config(workdir, iat="a.b.c", name="agentconfig.json"):
    doc = {
        "content": {
            "baseUrl": "https://gw.example.com",
            "iat": iat,
            "clientCredentialProfile": ["SHARED_SECRET"],
            "clientId": CLIENT,
            "tenant": "acme",
        },
        "expiration": "2026-01-08T00:00:00.000Z",
    }
    path = workdir + "/" + name
    with open(path, "w") as f:
        f.write(json.dumps(doc))
    return path


def make(workdir, svc=None, device_s=T0, epoch=1970, iat="a.b.c", cfg_name="agentconfig.json"):
    svc = svc or FakeService(iat=iat)
    t = FakeTime(device_s, epoch)
    agent = Agent(
        config=write_config(workdir, iat, cfg_name),
        state=workdir + "/state",
        clock=clock.Clock(time_module=t),
        conn=svc,
    )
    return agent, svc, t


def reboot(workdir, agent, t, cfg_name="agentconfig.json"):
    """A new Agent on the same files (a power cycle), same service and device clock."""
    return Agent(
        config=workdir + "/" + cfg_name,
        state=workdir + "/state",
        clock=clock.Clock(time_module=t),
        conn=agent.conn,
    )


def advance(svc, t, seconds):
    svc.now += seconds
    t.unix_s += seconds


# ---- onboarding ----------------------------------------------------------------------------------------


def test_onboard_once(workdir):
    agent, svc, t = make(workdir)
    assert agent.onboard() is True
    assert agent.onboard() is False
    assert reboot(workdir, agent, t).onboard() is False
    assert svc.count("POST", REGISTER_PATH) == 1
    m, p, h, b = svc.log[0]
    assert h["Authorization"] == "Bearer a.b.c" and h["Content-Type"] == "application/json" and b == b"{}"
    reg = agent.identity.registration()
    assert reg["secret"] == svc.secret and reg["rat"] == svc.rat
    assert reg["uri"] == ORIGIN + REGISTER_PATH + "/" + CLIENT  # as the service gave it


def test_the_iat_is_not_held_once_used_and_read_again_if_the_registration_is_lost(workdir):
    agent, svc, t = make(workdir)
    assert agent.onboard() is True
    assert agent.config.iat is None  # spent: ~1 KB of heap not held through an upload
    again = reboot(workdir, agent, t)
    assert again.config.iat == "a.b.c" and again.onboard() is False
    assert again.config.iat is None  # nor after a reboot, once the registration is known
    agent.identity.state.remove("registration")  # lost: the IAT comes from agentconfig.json again
    svc.iats["a.b.c"] = False
    assert agent.onboard() is True
    assert svc.count("POST", REGISTER_PATH) == 2
    assert svc.log[-1][2]["Authorization"] == "Bearer a.b.c" and agent.config.iat is None
    agent.identity.state.remove("registration")
    write_config(workdir, "d.e.f")  # another key in the file than the one this agent was made with
    e = raises(NeedsOnboarding, agent.onboard)
    assert "changed" in str(e) and "d.e.f" not in str(e)
    os.remove(workdir + "/agentconfig.json")  # gone: the same answer, not a ConfigError
    e = raises(NeedsOnboarding, agent.onboard)
    assert "agentconfig.json" in str(e)
    assert svc.count("POST", REGISTER_PATH) == 2


def test_refused_iat_is_needs_onboarding(workdir):
    agent, svc, t = make(workdir)
    svc.iats["a.b.c"] = True  # already used
    e = raises(NeedsOnboarding, agent.onboard)
    assert "agentconfig.json" in str(e) and "401" in str(e) and "a.b.c" not in str(e)
    assert "2026-01-08" in str(e)  # the IAT expiry from the file
    e = raises(NeedsOnboarding, agent.token)
    assert agent.identity.registration() is None


def test_onboarding_server_error_is_http_error(workdir):
    agent, svc, t = make(workdir)
    svc.fault(REGISTER_PATH, 503)
    e = raises(HttpError, agent.onboard)
    assert e.status == 503
    # made by httputil.http_error, the one maker of HttpError: the step, the status, an excerpt of the body
    assert str(e) == 'onboarding: HTTP 503 Fake (a request): {"id":"x","message":"injected"}', str(e)
    assert e.retry_after is None and e.body == b'{"id":"x","message":"injected"}'
    assert agent.onboard() is True


# ---- tokens --------------------------------------------------------------------------------------------


def test_token_is_cached_and_kept_across_reboots(workdir):
    agent, svc, t = make(workdir)
    tok = agent.token()
    assert tok == svc.tokens[0]
    assert agent.token() == tok
    advance(svc, t, 1000)
    assert reboot(workdir, agent, t).token() == tok
    assert svc.count("POST", TOKEN_PATH) == 1
    m, p, h, b = svc.log[-1]
    assert h["Content-Type"] == "application/x-www-form-urlencoded" and "Authorization" not in h
    # Renewed shortly before it expires.
    advance(svc, t, 1800 - 1000 - 30)
    assert agent.token() == svc.tokens[1]
    assert svc.count("POST", TOKEN_PATH) == 2


def test_secret_rotates_when_less_than_25h_left(workdir):
    agent, svc, t = make(workdir)
    agent.token()
    first = svc.secret
    advance(svc, t, 7 * DAY - 25 * 3600 - 60)  # just before the 25 h mark: no rotation
    agent.token()
    assert svc.count("PUT", REGISTER_PATH) == 0
    advance(svc, t, 120)
    agent.token()
    assert svc.count("PUT", REGISTER_PATH) == 1
    reg = agent.identity.registration()
    assert reg["secret"] == svc.secret != first  # rotated although the cached token was still valid
    prev = agent.identity.state.load("previous")
    assert not reg["used"] and prev[0]["rat"] == "rat-1" and "secret" not in prev[0]
    advance(svc, t, 1800)
    agent.token()
    reg = agent.identity.registration()
    assert reg["used"] and agent.identity.state.load("previous") is None  # older tokens are dead now
    assert reboot(workdir, agent, t).identity.registration()["secret"] == svc.secret
    assert agent.identity.rotation_due_at() == svc.secret_exp - 25 * 3600


def test_short_lived_secret_rotates_at_half_life_without_looping(workdir):
    svc = FakeService(secret_life=2 * 3600, token_life=600)
    agent, svc, t = make(workdir, svc)
    agent.token()
    assert svc.count("PUT", REGISTER_PATH) == 0
    for _ in range(6):  # 6 x 20 min: rotations at 1 h and 2 h (each half-life)
        advance(svc, t, 1200)
        agent.token()
    assert svc.count("PUT", REGISTER_PATH) == 2, svc.count("PUT", REGISTER_PATH)


def test_token_400_rotates_and_retries(workdir):
    agent, svc, t = make(workdir)
    agent.onboard()
    svc.fault(TOKEN_PATH, 400)
    tok = agent.token()
    assert tok == svc.tokens[-1]
    assert svc.count("PUT", REGISTER_PATH) == 1
    assert svc.count("POST", TOKEN_PATH) == 2


def test_expired_secret_after_long_sleep_is_rotated(workdir):
    agent, svc, t = make(workdir)
    agent.token()
    advance(svc, t, 8 * DAY)  # slept through the expiry: the token endpoint says 400
    svc_secret = svc.secret
    agent.identity.rotation_due_at = lambda reg=None: None  # as if the 25 h rule had not been checked
    assert agent.token() == svc.tokens[-1]
    assert svc.secret != svc_secret


def test_lost_rotation_answer_is_recovered(workdir):
    agent, svc, t = make(workdir)
    agent.token()
    advance(svc, t, 6 * DAY + 3600)

    saves = []

    def cut(name):
        if name == "registration":
            saves.append(name)
            if len(saves) == 2:  # the first save marks the rotation pending; the second would keep its answer
                raise OSError(5, "power cut")

    state.before_commit = cut
    try:
        raises(OSError, agent.token)
    finally:
        state.before_commit = None
    assert svc.gen == 2  # the service rotated; we did not keep its answer
    again = reboot(workdir, agent, t)
    assert again.identity.registration()["secret"] != svc.secret
    tok = again.token()
    assert tok == svc.tokens[-1]
    assert svc.gen == 3 and again.identity.registration()["secret"] == svc.secret


def test_lost_rotation_answer_then_old_secret_refused_with_401(workdir):
    # The rotation's answer is lost in transit (not by a save failure); later the old secret gets 401.
    agent, svc, t = make(workdir)
    agent.token()
    advance(svc, t, 6 * DAY + 3600)  # the rotation is due
    svc.fault(REGISTER_PATH + "/", -1, "PUT")  # the service rotates, its answer never arrives
    agent.token()  # the cached token still works: the failed rotation is remembered, not raised
    assert svc.gen == 2 and agent.identity.registration()["rotating"]
    advance(svc, t, 1900)  # cached token expired; the old secret gets 401, and we know why
    assert agent.token() == svc.tokens[-1]
    assert svc.gen == 3 and not agent.identity.registration().get("rotating")


def test_a_token_401_does_not_rotate(workdir):
    """A 401 the clock does not explain, with no rotation of ours pending, is an error, not a reason to
    rotate (the Node.js library never does; an unneeded rotation whose answer is lost locks a device out)."""
    agent, svc, t = make(workdir)
    agent.token()
    advance(svc, t, 1900)
    svc.fault(TOKEN_PATH, 401)
    e = raises(HttpError, agent.token)
    assert e.status == 401
    assert svc.count("PUT", REGISTER_PATH) == 0 and svc.gen == 1
    assert agent.token() == svc.tokens[-1]  # the next try works with the same secret


def test_answers_time_read_once_an_hour_or_on_401(workdir):
    """observe reads an answer's time when the clock is not sane, on a 401 and once an hour: not per batch of
    an upload (the date parsing stays out of the flush's heap), and the parsing module is not kept loaded."""
    agent, svc, t = make(workdir)
    ident = agent.identity
    t0 = T0 + 3600  # the service is an hour ahead of the device

    def at(s, status=200):
        return Resp(status, headers={"server-time": str(s)})

    assert ident.observe(at(t0)) is True and abs(agent.clock.now_s() - t0) <= 1
    assert ident.observe(at(t0 + 100)) is False and abs(agent.clock.now_s() - t0) <= 1  # not read
    assert not compat.MICROPYTHON or "mcagent.clockutil" not in sys.modules
    assert ident.observe(at(t0 + 100, 401)) is True and abs(agent.clock.now_s() - t0 - 100) <= 1
    t.unix_s += 3599
    assert ident.observe(at(t0 + 3599 + 200)) is False  # within the hour of the last read
    t.unix_s += 1
    assert ident.observe(at(t0 + 3600 + 300)) is True and abs(agent.clock.now_s() - t0 - 3900) <= 1
    assert not compat.MICROPYTHON or "mcagent.clockutil" not in sys.modules


def test_server_time_as_epoch_seconds_or_ms_and_date_as_fallback():
    c = clock.Clock(FakeTime(1000))
    assert c.learn_from_headers(server_time="1790000000") and c.now_s() == 1790000000
    assert c.learn_from_headers(server_time="1790000100123") and c.now_s() == 1790000100
    assert c.learn_from_headers(server_time="2026-09-21T14:13:20.000Z") and c.now_s() == 1790000000
    date = clock.http_date(1790000200)
    assert c.learn_from_headers(server_time="not a time", date=date) and c.now_s() == 1790000200
    assert not c.learn_from_headers(server_time="not a time", date="nor this")
    assert c.now_s() == 1790000200  # unchanged


def test_recovery_with_an_older_registration_token(workdir):
    agent, svc, t = make(workdir)
    agent.onboard()
    svc.fault(TOKEN_PATH, 400)
    agent.token()  # rotation: we hold gen 2, previous gen 1 is dropped once gen 2 earned a token
    # Now a rotation that the service "forgets": we hold gen 3 + prev gen 2, the service only knows gen 2.
    agent.identity.rotate()
    assert agent.identity.state.load("previous")[0]["rat"] == "rat-2"
    svc.gen, svc.secret, svc.rat, svc.prev_rat, svc.new_secret_used = 2, "lost", "rat-2", None, True
    svc.fault(TOKEN_PATH, 400)  # the token endpoint says the secret expired: recover
    advance(svc, t, 1900)
    assert agent.token() == svc.tokens[-1]
    assert agent.identity.registration()["secret"] == svc.secret and svc.gen == 3


def test_locked_out_raises_needs_onboarding_then_new_config_recovers(workdir):
    agent, svc, t = make(workdir)
    agent.token()
    store = workdir + "/store"  # stands for the data store: must survive re-onboarding
    with open(store, "w") as f:
        f.write("buffered readings")
    advance(svc, t, 8 * DAY)
    svc.rat = svc.prev_rat = "revoked"  # the registration token is dead too
    e = raises(NeedsOnboarding, agent.token)
    text = str(e)
    assert "locked out" in text and "agentconfig.json" in text and "buffered data is kept" in text
    for secret in ("secret-1", "rat-1", "a.b.c", "access-"):
        assert secret not in text
    # The user installs a new agentconfig.json for the same agent.
    svc.new_iat("d.e.f")
    write_config(workdir, "d.e.f")
    again = reboot(workdir, agent, t)
    assert again.token() == svc.tokens[-1]
    assert again.identity.registration()["key_id"] == config.key_id("d.e.f")
    with open(store) as f:
        assert f.read() == "buffered readings"
    assert again.onboard() is False


def test_new_config_for_a_live_agent_is_used_and_a_bad_one_is_not_retried(workdir):
    agent, svc, t = make(workdir)
    agent.token()
    svc.new_iat("g.h.i")
    write_config(workdir, "g.h.i")
    again = reboot(workdir, agent, t)
    assert again.onboard() is True
    assert svc.gen == 2
    # A key that the service refuses, beside a working registration: keep going, don't retry each boot.
    write_config(workdir, "bad.key.x")
    again = reboot(workdir, agent, t)
    assert again.onboard() is False
    advance(svc, t, 1900)
    assert again.token() == svc.tokens[-1]
    assert reboot(workdir, agent, t).onboard() is False
    assert svc.count("POST", REGISTER_PATH) == 3


# ---- clock ---------------------------------------------------------------------------------------------


def test_a_memory_error_reading_the_answers_time_does_not_cost_the_registration(workdir):
    """The service spends the onboarding key (and, on a rotation, the old secret) as it answers: a heap that
    runs out while the answer's time is read (the date parsing is loaded then) must not lose it."""
    agent, svc, t = make(workdir, device_s=T0 - 3600)  # an hour off: the answer's time is read

    def no_heap(*args):
        raise MemoryError("memory allocation failed, allocating 64 bytes")

    agent.clock.learn_from_headers = no_heap
    assert agent.onboard() is True
    assert agent.identity.registration()["secret"] == svc.secret
    assert agent.onboard() is False and svc.count("POST", REGISTER_PATH) == 1
    old = svc.secret
    agent.identity.rotate()  # the same for the answer of a rotation
    assert agent.identity.registration()["secret"] == svc.secret != old
    # elsewhere a MemoryError is raised as ever (the caller counts it, the readings stay on flash)
    raises(MemoryError, agent.token)


def test_a_memory_error_on_an_insane_clock_does_not_misdate_the_registration(workdir):
    """The answer's time is read once more before issued_at is set: a clock ten years off would otherwise
    date a 2-hour secret's issue far in the past and rotate it at once."""
    agent, svc, t = make(workdir, device_s=T0 - 10 * 365 * DAY)
    svc.secret_life = 2 * 3600
    real = agent.clock.learn_from_headers
    fails = [1]

    def once_no_heap(*args):
        if fails:
            fails.pop()
            raise MemoryError("memory allocation failed, allocating 64 bytes")
        return real(*args)

    agent.clock.learn_from_headers = once_no_heap
    assert agent.onboard() is True
    reg = agent.identity.registration()
    assert abs(reg["issued_at"] - svc.now) <= 1
    agent.token()
    assert svc.count("PUT", REGISTER_PATH + "/" + CLIENT) == 0


def test_insane_clock_learns_from_onboarding_answer(workdir):
    agent, svc, t = make(workdir, device_s=T0 - 10 * 365 * DAY)
    assert not agent.clock.is_sane()
    agent.token()
    assert agent.clock.is_sane()
    assert svc.count("GET", TOKEN_KEY_PATH) == 0
    assert abs(agent.clock.now_s() - svc.now) <= 1


def test_insane_clock_asks_the_server_before_signing(workdir):
    agent, svc, t = make(workdir)
    agent.onboard()
    again = Agent(
        config=workdir + "/agentconfig.json",
        state=workdir + "/state2",
        clock=clock.Clock(time_module=FakeTime(T0 - 10 * 365 * DAY)),
        conn=svc,
    )
    # Same registration, fresh state otherwise (no learned correction yet).
    again.state.save("registration", agent.identity.registration())
    assert again.token() == svc.tokens[-1]
    assert svc.count("GET", TOKEN_KEY_PATH) == 1
    assert svc.log[-2][1] == TOKEN_KEY_PATH  # before the token request


def test_insane_clock_without_date_header_refuses_to_sign(workdir):
    agent, svc, t = make(workdir, device_s=1000)
    svc.send_date = False
    agent.state.save(
        "registration",
        {
            "client_id": CLIENT,
            "secret": "s",
            "expires_at": 0,
            "rat": "r",
            "uri": "/u",
            "key_id": agent.config.key_id,
        },
    )
    e = raises(identity.ClockError, agent.token)
    assert "1970" in str(e)
    assert svc.count("POST", TOKEN_PATH) == 0


def test_clock_10_years_ahead_is_corrected_from_401_and_kept(workdir):
    agent, svc, t = make(workdir, FakeService(secret_life=20 * 365 * DAY))
    agent.onboard()
    t.unix_s += 10 * 365 * DAY  # e.g. an RTC set wrongly; still "sane" (after 2024)
    agent2 = reboot(workdir, agent, t)
    agent2.identity.clock.correction_ms = 0
    agent2.state.remove("clock")
    assert agent2.token() == svc.tokens[-1]
    assert abs(agent2.clock.now_s() - svc.now) <= 1
    assert svc.count("POST", TOKEN_PATH) == 2
    # The learned correction is kept in state.
    agent3 = reboot(workdir, agent, t)
    _ = agent3.identity  # loads the clock
    assert abs(agent3.clock.now_s() - svc.now) <= 1


def test_correction_learned_on_an_insane_clock_is_dropped_when_the_clock_is_set(workdir):
    agent, svc, t = make(workdir, device_s=5000)  # RTC at 1970 + 5000 s
    agent.token()
    assert abs(agent.clock.now_s() - svc.now) <= 1
    t.unix_s = svc.now  # NTP set the clock
    again = reboot(workdir, agent, t)
    _ = again.identity  # loads the clock
    assert again.clock.correction_ms == 0


def test_2000_epoch_port(workdir):
    agent, svc, t = make(workdir, epoch=2000)
    assert abs(agent.clock.now_s() - T0) <= 1
    agent.token()
    advance(svc, t, 6 * DAY + 3600)
    agent.token()
    assert svc.count("PUT", REGISTER_PATH) == 1
    assert agent.clock.correction_ms == 0


# ---- authorised requests -------------------------------------------------------------------------------


def test_401_gets_a_new_token_and_one_retry(workdir):
    agent, svc, t = make(workdir)
    agent.token()
    svc.fault("/echo", 401)
    assert agent.request("GET", "/echo").status == 200
    assert len(svc.tokens) == 2
    svc.fault("/echo", 401)
    svc.fault("/echo", 401)
    assert agent.request("GET", "/echo").status == 401  # only one retry
    assert len(svc.tokens) == 3


def test_nothing_secret_in_repr_or_status(workdir):
    agent, svc, t = make(workdir)
    agent.token()
    text = repr(agent) + repr(agent.identity) + repr(agent.config) + repr(agent.state) + repr(agent.status())
    for secret in (svc.secret, svc.rat, svc.tokens[0], "a.b.c"):
        assert secret not in text, secret
    st = agent.status()
    assert st["onboarded"] and st["secret_expires_at"] == svc.secret_exp and st["token_valid_until_ms"]


def test_agent_needs_no_network_to_start(workdir):
    agent = Agent(config=write_config(workdir), state=workdir + "/s", ca=[workdir + "/none.der"])
    assert agent._conn is None and agent._identity is None
    e = raises(ValueError, lambda: agent.conn)
    assert "none.der" in str(e)
    with open(workdir + "/ca.pem", "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\n")
    e = raises(ValueError, lambda: Agent(config=workdir + "/agentconfig.json", ca=workdir + "/ca.pem").conn)
    assert "DER" in str(e)
    raises(config.ConfigError, Agent, config=workdir + "/missing.json")


# ---- DSC and mappings ----------------------------------------------------------------------------------

ENTITY = "a" * 32
DSC = {
    "configurationId": "CF-1",
    "entityId": ENTITY,
    "propertySetName": "Environment",
    "dataSources": [
        {
            "name": "DS-1",
            "description": "board sensors",
            "dataPoints": [
                {
                    "id": "DP-T",
                    "name": "Temperature",
                    "type": "DOUBLE",
                    "unit": "C",
                    "property": "temperature",
                },
                {"id": "DP-S", "name": "Status", "type": "STRING", "unit": ""},
            ],
        }
    ],
}


def test_build_full_and_compact_forms_give_the_same_text():
    full, maps, types = dsc.build(DSC)
    compact = {
        "configurationId": "CF-1",
        "entityId": ENTITY,
        "propertySetName": "Environment",
        "dataSources": {"DS-1": {"DP-T": ["DOUBLE", "C", "temperature"], "DP-S": "STRING"}},
    }
    c, cmaps, ctypes = dsc.build(compact)

    text = cjson.dumps(full)
    assert text.startswith(
        '{"configurationId":"CF-1","dataSources":[{"name":"DS-1","description":"board sensors",'
    )
    assert '{"id":"DP-T","name":"Temperature","type":"DOUBLE","unit":"C"}' in text
    assert maps == [("DP-T", ENTITY, "Environment", "temperature")] and cmaps == maps
    assert types == ctypes == {"DP-T": "DOUBLE", "DP-S": "STRING"}
    assert '{"id":"DP-S","name":"DP-S","type":"STRING","unit":""}' in cjson.dumps(c)


def test_build_rejects_bad_descriptions():
    cases = (
        ({}, "configurationId"),
        ({"configurationId": "C"}, "dataSources"),
        ({"configurationId": "C", "dataSources": [{"name": "D", "dataPoints": []}]}, "dataPoints"),
        ({"configurationId": "C", "dataSources": {"D": {"P": "FLOAT"}}}, "FLOAT"),
        ({"configurationId": "C", "dataSources": {"D": {"P": "INT"}, "E": {"P": "INT"}}}, "twice"),
        ({"configurationId": "C", "dataSources": {"D": {"P": ["INT", "u", "prop"]}}}, "entityId"),
        ({"configurationId": "C", "dataSources": {"D": {"P": ["INT", 5]}}}, "unit"),
        (
            {
                "configurationId": "C",
                "dataSources": {"D": {"P": {"type": "INT", "mappings": [{"entityId": "e"}]}}},
            },
            "propertySetName",
        ),
    )
    for desc, word in cases:
        e = raises(dsc.DscError, dsc.build, desc)
        assert word in str(e), (word, str(e))


def test_configure_puts_once_and_maps(workdir):
    agent, svc, t = make(workdir)
    s = agent.configure(DSC)
    assert s == {"dsc": "put", "mappings": 1, "existing": 0, "configurationId": "CF-1"}, s
    put = [x for x in svc.log if x[0] == "PUT" and "dataSource" in x[1]][0]
    assert put[2]["If-Match"] == "0" and put[2]["Authorization"].startswith("Bearer access-")
    assert svc.mappings == [("DP-T", ENTITY, "Environment", "temperature")]
    assert agent.configuration_id == "CF-1"
    n = len(svc.log)
    assert reboot(workdir, agent, t).configure(DSC)["dsc"] == "unchanged"
    assert len(svc.log) == n  # nothing sent at all
    # A change: GET for the eTag, PUT with If-Match = that eTag.
    changed = json.loads(json.dumps(DSC))
    changed["dataSources"][0]["dataPoints"][1]["unit"] = "-"
    assert agent.configure(changed)["dsc"] == "put"
    assert svc.log[-3][0] == "PUT" and svc.log[-3][2]["If-Match"] == "1"
    assert svc.log[-2][1] == MAPPINGS_PATH  # mappings re-posted after a PUT: 409 is fine once the service
    assert svc.log[-1][1].startswith(MAPPINGS_PATH + "?filter=")  # lists the mapping as this agent's
    assert svc.etag == 2


def test_configure_streams_the_dsc_with_its_byte_length(workdir):
    """The DSC goes out as a streaming body (never one text in RAM): its length counts UTF-8 bytes, escapes
    are right, and the same DSC again is "unchanged" (the digest of the streamed bytes was kept)."""
    agent, svc, t = make(workdir)
    odd = json.loads(json.dumps(DSC))
    odd["dataSources"][0]["description"] = 'Kessel "Süd"\tà'
    odd["dataSources"][0]["dataPoints"][0]["unit"] = "\u00b0C"
    assert agent.configure(odd)["dsc"] == "put"
    put = [x for x in svc.log if x[0] == "PUT" and "dataSource" in x[1]][0]
    assert put[3] == cjson.dumps(dsc.build(odd)[0]).encode()  # the fake checked length == bytes sent
    assert svc.dsc["dataSources"][0]["dataPoints"][0]["unit"] == "\u00b0C"
    assert svc.dsc["dataSources"][0]["description"] == 'Kessel "Süd"\tà'
    assert reboot(workdir, agent, t).configure(odd)["dsc"] == "unchanged"


def test_configure_with_lost_state_does_not_put_the_same_dsc(workdir):
    agent, svc, t = make(workdir)
    agent.configure(DSC)
    agent.state.remove("dsc")
    s = reboot(workdir, agent, t).configure(DSC)
    assert s["dsc"] == "same" and s["existing"] == 1 and s["mappings"] == 0
    assert svc.etag == 1


def test_a_mapping_conflict_with_another_agent_stops_instead_of_losing_the_values(workdir):
    """409 means "already there" only when the service lists the mapping as this agent's: a property that
    takes another agent's point would have the service drop every value of ours while we count them sent."""
    agent, svc, t = make(workdir)
    svc.foreign.append((ENTITY, "Environment", "temperature"))
    e = raises(dscput.MappingError, agent.configure, DSC)
    text = str(e)
    assert "DP-T -> %s/Environment/temperature refused (HTTP 409: property already takes" % ENTITY in text
    assert "mapped otherwise (another agent's mapping" in text and "dsc.entityId" in text, text
    assert svc.count("GET", MAPPINGS_PATH + "?filter=") == 1
    svc.mapping_page = b"<html>a proxy's page</html>"  # no answer: not blamed on another agent
    assert raises(HttpError, agent.configure, DSC).status == 200
    svc.mapping_page = b'{"content": [{"agentId": "%s", "dataPointId": "DP-X"}]}' % CLIENT.encode()
    raises(dscput.MappingError, agent.configure, DSC)  # ours, but another mapping: not this one
    svc.mapping_page = None
    svc.foreign = []
    assert agent.configure(DSC)["mappings"] == 1  # once the other mapping is gone, ours is made


def test_configure_412_refetches_the_etag(workdir):
    agent, svc, t = make(workdir)
    agent.configure(DSC)
    svc.fault(dscput.dsc_path(CLIENT), 412, "PUT")  # someone else changed it between our GET and PUT
    changed = dict(DSC)
    changed["configurationId"] = "CF-2"
    assert agent.configure(changed)["dsc"] == "put"
    assert svc.dsc["configurationId"] == "CF-2" and svc.etag == 2
    assert svc.count("GET", dscput.dsc_path(CLIENT)) == 3


def test_configure_errors(workdir):
    agent, svc, t = make(workdir)
    bad = json.loads(json.dumps(DSC))
    bad["dataSources"][0]["dataPoints"][0]["property"] = "nope"
    e = raises(dscput.MappingError, agent.configure, bad)
    assert "DP-T" in str(e) and "no such property" in str(e)
    svc.fault(MAPPINGS_PATH, 500)
    e = raises(HttpError, agent.configure, DSC)
    assert e.status == 500
    assert agent.configure(DSC) == {
        "dsc": "unchanged",
        "mappings": 1,
        "existing": 0,
        "configurationId": "CF-1",
    }
    svc.fault(dscput.dsc_path(CLIENT), 503, "GET")
    changed = dict(DSC)
    changed["configurationId"] = "CF-2"
    assert raises(HttpError, agent.configure, changed).status == 503


def test_one_shot_modules_are_unloaded_and_their_errors_still_match(workdir):
    import sys

    import mcagent

    agent, svc, t = make(workdir)
    upy = sys.implementation.name == "micropython"  # unloading is for a board's heap: a no-op on CPython
    assert "mcagent.config" not in sys.modules or not upy
    agent.configure(DSC)
    assert ("mcagent.dsc" not in sys.modules or not upy) and agent.configuration_id == "CF-1"
    assert "mcagent.dscput" not in sys.modules or not upy
    raises(mcagent.DscError, agent.configure, {"configurationId": "x"})
    raises(dsc.DscError, agent.configure, {"configurationId": "x"})
    raises(config.ConfigError, Agent, config=workdir + "/nope.json")
    raises(mcagent.ConfigError, Agent, config=workdir + "/nope.json")


def test_due_rotation_that_fails_does_not_cost_the_valid_token(workdir):
    agent, svc, t = make(workdir)
    tok = agent.token()
    advance(svc, t, 6 * DAY + 60)  # rotation due; the cached token expired long ago: fetch a new one
    svc.fault(REGISTER_PATH + "/", 0)  # the rotation's connection breaks
    tok = agent.token()
    assert tok == svc.tokens[-1]
    assert "TransportError" in agent.status()["last_rotation_error"]
    assert agent.token() == tok  # not retried at once ...
    assert svc.count("PUT", REGISTER_PATH) == 1  # (the broken one)
    advance(svc, t, enroll.ROTATION_RETRY_S)
    agent.token()  # ... but after a while
    assert svc.count("PUT", REGISTER_PATH) == 2 and agent.status()["last_rotation_error"] is None


def test_a_success_answer_with_another_status_never_puts_its_secret_in_a_message(workdir):
    """A registration answered 200 instead of 201 is a registration (the key is spent either way); a
    rotation answered 204 is an error whose text (status(), the run log) says nothing of the answer's body,
    which may carry the new secret."""
    agent, svc, t = make(workdir)
    issue = svc._issue
    svc._issue = lambda status: issue(200)
    assert agent.onboard() is True and agent.identity.registration()["secret"] == svc.secret
    agent.token()
    svc._issue = lambda status: issue(204)
    advance(svc, t, 6 * DAY + 60)  # rotation due
    agent.token()
    err = agent.status()["last_rotation_error"]
    assert "HTTP 204" in err and "body not shown" in err and "secret-" not in err and "rat-" not in err, err


def test_token_answer_read_in_place_or_parsed():
    """The usual token answer is read in place (the header value built in the answer's own buffer); any other
    shape goes through the JSON parser; an answer without a token is a ProtocolError."""
    body = bytearray(b'{"access_token":"eyJ0.eyJ1.sig_-","token_type":"Bearer","expires_in":1799,"jti":"x"}')
    assert token._token_answer(Resp(200, body)) == ("Bearer eyJ0.eyJ1.sig_-", 1799)
    assert body.startswith(b'{"access_tBearer eyJ0')  # in place: the header value was built in the body
    spaced = bytearray(b'{"access_token" : "abc",\n "expires_in": 60}')  # what southgate (aiohttp) sends
    assert token._token_answer(Resp(200, spaced)) == ("Bearer abc", 60)
    assert spaced.startswith(b'{"access_tokBearer abc')  # read in place too
    for odd in (
        b'{"access_token"',
        b'{"access_token":',
        b'{"access_token" x "a","expires_in":1}',
        b'{"access_token":"a","expires_in":1',
    ):
        raises(identity.ProtocolError, token._token_answer, Resp(200, bytearray(odd)))
    escaped = bytearray(b'{"access_token":"a\\/b","expires_in":5}')
    assert token._token_answer(Resp(200, escaped)) == ("Bearer a/b", 5)
    as_bytes = b'{"expires_in":120,"access_token":"t.u.v"}'
    assert token._token_answer(Resp(200, as_bytes)) == ("Bearer t.u.v", 120)
    no_life = bytearray(b'{"access_token":"t"}')
    assert token._token_answer(Resp(200, no_life)) == ("Bearer t", 1800)
    raises(identity.ProtocolError, token._token_answer, Resp(200, bytearray(b'{"token":"t"}')))


class OtherOrigin:
    """A connection to the origin a registration_client_uri names, in front of the same fake service."""

    def __init__(self, svc, origin):
        self.svc = svc
        self.origin = origin
        self.closed = 0

    def request(self, method, path, headers=None, body=None, max_body=4096):
        assert path.startswith(self.origin), path
        return self.svc.request(method, ORIGIN + path[len(self.origin) :], headers, body, max_body)

    def close(self):
        self.closed += 1


def test_rotation_goes_to_the_registration_uri_as_given(workdir):
    """registration_client_uri on another origin: the rotation goes there, on a connection of its own."""
    svc = FakeService()
    svc.rotation_origin = "https://rotation.example.com"
    agent, svc, t = make(workdir, svc)
    made = []

    def connect(url):
        made.append(OtherOrigin(svc, "https://rotation.example.com"))
        return made[-1]

    agent._connect = connect  # before the identity exists: it takes the agent's connector
    agent.token()
    assert agent.identity.registration()["uri"].startswith("https://rotation.example.com/")
    agent.identity.rotate()
    assert svc.count("PUT", REGISTER_PATH) == 1 and svc.gen == 2
    assert len(made) == 1 and made[0].closed == 1


def test_a_plain_http_registration_uri_gets_no_registration_token(workdir):
    """The service's answer names where rotations go; a plain http:// address there (while the gateway is
    https) is refused before anything is sent: the registration token never travels in clear."""
    svc = FakeService()
    svc.rotation_origin = "http://rotation.example.com"
    agent, svc, t = make(workdir, svc)
    made = []
    agent._connect = lambda url: made.append(url)
    agent.token()
    e = raises(identity.ProtocolError, agent.identity.rotate)
    assert "plain http://" in str(e) and made == [] and svc.gen == 1
