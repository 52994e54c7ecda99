"""Who the agent is to the service: onboarding, access tokens, secret rotation and recovery (protocol §A-§C).

Rules, in the order they apply (each one is there because an agent in the field got locked out without it):
- Onboard once with the IAT (201); the registration is saved atomically before anything else happens.
- Never sign an assertion with a clock before 2024: ask the server for its time first. A 401 whose
  `Server-Time`/`Date` disagrees with our clock teaches the clock and is retried once. The learned
  correction is kept in state.
- Rotate the secret when less than min(25 h, half its lifetime) is left (Node's 25 h rule; the half-life
  cap stops an endless rotation loop on services with short-lived secrets). The check runs on every
  token() and after each token answer (the clock has just been checked against the service's then).
- Rotate when the token endpoint answers 400 (MCL's sign of an expired secret) or a 401 that the clock
  does not explain: that is also how a rotation whose answer was lost (cut after the service answered,
  before the save) is recovered: the service accepts the previous registration access token until the new
  secret has been used (§B). Older registration tokens are kept for the case where the service is behind
  us, and dropped once the current secret has earned a token.
- When no registration token works and agentconfig.json holds no unused key: `NeedsOnboarding`.
  A new agentconfig.json for the same agent is used as soon as it appears; the data store is untouched.

State files (see mcagent.state): "registration" {client_id, secret, expires_at, issued_at, rat, uri,
key_id, used, prev: [{rat, uri, expires_at}], bad_key?}, "token" {client_id, token, expires_ms},
"clock" {correction_ms, device_sane}.
"""

from micropython import const

from mcagent import NeedsOnboarding, cjson, jwt
from mcagent.clock import SANE_AFTER_S, iso_ms
from mcagent.http import HttpError, TransportError

REGISTER_PATH = "/api/agentmanagement/v3/register"
TOKEN_PATH = "/api/agentmanagement/v3/oauth/token"
TOKEN_KEY_PATH = "/api/agentmanagement/v3/oauth/token_key"
ROTATE_BEFORE_S = const(90000)  # 25 h
LEARN_SKEW_MS = const(10000)  # a server clock this far from ours is adopted
TOKEN_MARGIN_S = const(60)  # a cached token is renewed this long before it expires
ROTATION_RETRY_S = const(600)  # a refused rotation (secret still valid) is tried again after this
_KEEP_PREVIOUS = const(2)
_FORM = "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion="


class ProtocolError(Exception):
    """The service answered something the protocol does not allow (e.g. a registration without a secret)."""


class ClockError(Exception):
    """The device clock is before 2024 and the service did not tell us the time."""


def _json(resp):
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ProtocolError("HTTP %d answer is not a JSON object" % resp.status)
    return doc


def http_error(resp, what):
    """The error for an unexpected answer: HttpError with status, Retry-After and a body excerpt."""
    retry = resp.headers.get("retry-after")
    return HttpError(resp.status, "%s: HTTP %d" % (what, resp.status),
                     int(retry) if retry and retry.isdigit() else None, resp.body[:200])


class Identity:
    """Registration, token cache and clock correction of one agent, kept in a State directory.

    conn: an http.Connection-like object (only .request is used), or a function that returns one when
    first needed (a wake-up with a cached token then opens nothing); clock: clock.Clock.
    """

    def __init__(self, config, state, conn, clock):
        self.config = config
        self.state = state
        self._conn = conn
        self.clock = clock
        self.last_rotation_error = None
        self._retry_rotation_at = 0
        self._reg = None
        self._token = None
        self._token_expires_ms = 0
        self._auth = self._auth_for = None
        saved = state.load("clock")
        # A correction learned while the device clock was insane is void once someone (NTP) set the clock.
        if saved and (saved.get("device_sane") or clock.device_ms() // 1000 < SANE_AFTER_S):
            clock.correction_ms = saved.get("correction_ms", 0)
        tok = state.load("token")
        if tok and tok.get("client_id") == config.client_id:
            self._token = tok.get("token")
            self._token_expires_ms = tok.get("expires_ms", 0)

    def __repr__(self):
        return "<Identity %s onboarded=%s>" % (self.config.client_id, self.registration() is not None)

    @property
    def conn(self):
        if not hasattr(self._conn, "request"):
            self._conn = self._conn()
        return self._conn

    def _call(self, method, path, headers, body=None, max_body=2048):
        resp = self.conn.request(method, path, headers, body, max_body)
        if resp.status != 401:  # on 401 the caller decides whether the clock is to blame
            self.observe(resp)
        return resp

    # ---- clock ---------------------------------------------------------------------------------------

    def observe(self, resp):
        """Adopt the server's time from a response when ours is off by LEARN_SKEW_MS or more; the
        correction is saved. Returns True when the clock was corrected."""
        h = resp.headers
        before = self.clock.correction_ms
        if not self.clock.learn_from_headers(server_time=h.get("server-time"), date=h.get("date")):
            return False
        if -LEARN_SKEW_MS < self.clock.correction_ms - before < LEARN_SKEW_MS:
            self.clock.correction_ms = before  # within the noise of a 1-second Date: keep the old value
            return False
        self.state.save("clock", {"correction_ms": self.clock.correction_ms,
                                  "device_sane": self.clock.device_ms() // 1000 >= SANE_AFTER_S})
        return True

    def ensure_sane_clock(self):
        """Before signing: make sure the clock is after 2024, asking the server for its time if not."""
        if not self.clock.is_sane():
            self.observe(self.conn.request("GET", TOKEN_KEY_PATH, None, None, 64))
            if not self.clock.is_sane():
                raise ClockError("device clock says %s and the server sent no usable Date: set the time"
                                 % iso_ms(self.clock.now_ms()))

    # ---- registration --------------------------------------------------------------------------------

    def registration(self):
        """The saved registration of this agent (dict), or None before onboarding."""
        if self._reg is None:
            reg = self.state.load("registration")
            if reg and reg.get("client_id") == self.config.client_id and reg.get("secret"):
                self._reg = reg
        return self._reg

    def _save(self, reg):
        self.state.save("registration", reg)
        self._reg = reg
        return reg

    def _new_key(self, reg):
        """True when agentconfig.json holds an onboarding key this registration was not made with."""
        key = self.config.key_id
        return key != reg.get("key_id") and key != reg.get("bad_key")

    def onboard(self):
        """Onboard with the IAT unless already done with it. Returns True when a registration was made."""
        reg = self.registration()
        if reg is not None and not self._new_key(reg):
            return False
        try:
            self._register()
        except NeedsOnboarding:
            if reg is None:
                raise
            # A new key that does not work, beside a registration that may: keep going, don't retry it.
            reg["bad_key"] = self.config.key_id
            self._save(reg)
            return False
        return True

    def _register(self):
        cfg = self.config
        resp = self._call("POST", REGISTER_PATH,
                          {"Authorization": "Bearer " + cfg.iat, "Content-Type": "application/json"}, b"{}")
        if resp.status in (400, 401, 403, 409):
            exp = cfg.expiration_ms
            raise NeedsOnboarding(
                "the onboarding key in %s was refused (HTTP %d): used, expired or revoked%s. Download a new "
                "agentconfig.json for agent %s and install it; buffered data is kept."
                % (cfg.source, resp.status, " (expiry %s)" % iso_ms(exp) if exp else "", cfg.client_id))
        if resp.status != 201:
            raise http_error(resp, "onboarding")
        self.invalidate_token()
        return self._save(self._from_answer(_json(resp), None))

    def _from_answer(self, doc, old):
        """A registration record from an onboarding (201) or rotation (200) answer."""
        for name in ("client_secret", "registration_access_token", "registration_client_uri"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                raise ProtocolError("registration answer lacks %s" % name)
        if doc.get("client_id", self.config.client_id) != self.config.client_id:
            raise ProtocolError("registration answer is for another agent")
        try:
            expires = int(doc.get("client_secret_expires_at") or 0)
        except (TypeError, ValueError):
            raise ProtocolError("client_secret_expires_at is not a number")
        uri = doc["registration_client_uri"]
        if "://" in uri:  # absolute URL; the connection is already bound to the gateway
            rest = uri.split("://", 1)[1]
            uri = rest[rest.find("/"):] if "/" in rest else "/"
        reg = {"client_id": self.config.client_id, "secret": doc["client_secret"], "expires_at": expires,
               "issued_at": self.clock.now_s(), "rat": doc["registration_access_token"], "uri": uri,
               "key_id": self.config.key_id, "used": False, "prev": []}
        if old is not None:
            reg["key_id"] = old.get("key_id")
            prev = [{"rat": old["rat"], "uri": old["uri"], "expires_at": old.get("expires_at", 0)}]
            for p in old.get("prev", ()):
                if len(prev) < _KEEP_PREVIOUS and p["rat"] != old["rat"]:
                    prev.append(p)
            reg["prev"] = prev
            if old.get("bad_key"):
                reg["bad_key"] = old["bad_key"]
        return reg

    # ---- rotation ------------------------------------------------------------------------------------

    def rotation_due_at(self, reg=None):
        """Unix seconds from which the secret should be rotated (None: never expires / not onboarded).

        The board runtime must wake up before this (and well before the secret's expiry) to stay in."""
        reg = reg or self.registration()
        if reg is None or not reg.get("expires_at"):
            return None
        expires = reg["expires_at"]
        return expires - min(ROTATE_BEFORE_S, max(expires - reg.get("issued_at", expires), 0) // 2)

    def _rotate_with(self, reg, cand):
        """PUT the rotation with cand's registration token; the new registration (saved) or the Response."""
        resp = self._call("PUT", cand["uri"], {"Authorization": "Bearer " + cand["rat"],
                                               "Content-Type": "application/json"},
                          ('{"client_id":%s}' % cjson.quote(self.config.client_id)).encode())
        if resp.status != 200:
            return resp
        return self._save(self._from_answer(_json(resp), reg))

    def rotate(self):
        """Rotate the secret now; returns the new registration. HttpError when the service refuses."""
        reg = self.registration()
        if reg is None:
            raise NeedsOnboarding("agent %s is not onboarded" % self.config.client_id)
        new = self._rotate_with(reg, reg)
        if not isinstance(new, dict):
            raise http_error(new, "secret rotation")
        return new

    def _rotate_if_due(self, reg):
        """Rotate when due. A refusal or a network failure is remembered (and retried after a while), not
        raised: the caller has a valid token, the secret works until it expires, and if the service did
        rotate before the answer was lost, the next token request recovers (§B)."""
        due = self.rotation_due_at(reg)
        now = self.clock.now_s()
        if due is None or now < due or now < self._retry_rotation_at:
            return reg
        try:
            reg = self.rotate()
            self.last_rotation_error = None
        except (HttpError, ProtocolError, TransportError) as e:
            self.last_rotation_error = "%s: %s" % (type(e).__name__, e)
            self._retry_rotation_at = now + ROTATION_RETRY_S
        return reg

    def recover(self):
        """Get a working secret when the current one is refused: rotate with the current registration
        token, then with older ones, then onboard with a new key from agentconfig.json if there is one.
        Raises NeedsOnboarding when nothing works."""
        reg = self.registration()
        if reg is None:
            return self._register()
        for cand in [reg] + reg.get("prev", []):
            new = self._rotate_with(reg, cand)
            if isinstance(new, dict):
                return new
            if new.status not in (400, 401, 403, 404):
                raise http_error(new, "secret rotation")
        if self._new_key(reg):
            try:
                return self._register()
            except NeedsOnboarding:
                pass
        exp = reg.get("expires_at")
        raise NeedsOnboarding(
            "agent %s is locked out: its client secret (expiry %s) and registration token are refused and "
            "the onboarding key in %s is used. Offboard the agent, download a new agentconfig.json and "
            "install it there; buffered data is kept and uploads after onboarding."
            % (self.config.client_id, iso_ms(exp * 1000) if exp else "none", self.config.source))

    # ---- tokens --------------------------------------------------------------------------------------

    def token(self, force=False):
        """A valid access token: the cached one, or a new one (onboarding and rotating first if due)."""
        if not force and self._token is not None and self.clock.now_ms() < self._token_expires_ms:
            reg = self.registration()
            if reg is not None:
                self._rotate_if_due(reg)
            return self._token
        return self.fetch_token()

    def authorization(self):
        """The Authorization header value for the current token, built once per token (a token is ~1 KB:
        a new copy per request is garbage that fragments a small heap)."""
        token = self.token()
        if self._auth is None or self._auth_for is not token:
            self._auth = None  # drop the old copy before building the new one
            self._auth = "Bearer " + token
            self._auth_for = token
        return self._auth

    def invalidate_token(self):
        """Forget the cached token (the service answered 401 to it)."""
        self._auth = self._auth_for = None
        if self._token is not None:
            self._token = None
            self._token_expires_ms = 0
            self.state.remove("token")

    def fetch_token(self):
        reg = self.registration()
        if reg is None or self._new_key(reg):
            self.onboard()
            reg = self.registration()
        self.ensure_sane_clock()
        relearned = recovered = False
        while True:
            sent_ms = self.clock.now_ms()
            body = (_FORM + jwt.client_assertion(reg["client_id"], self.config.tenant, reg["secret"],
                                                 sent_ms // 1000)).encode()
            resp = self._call("POST", TOKEN_PATH, {"Content-Type": "application/x-www-form-urlencoded"}, body,
                              4096)
            if resp.status == 200:
                return self._accept(resp, reg, sent_ms)
            if resp.status == 401 and not relearned:
                relearned = True
                if self.observe(resp):
                    continue  # our clock was wrong: sign again with the right time
            if resp.status in (400, 401) and not recovered:
                recovered = True
                reg = self.recover()
                continue
            raise http_error(resp, "access token")

    def _accept(self, resp, reg, sent_ms):
        doc = _json(resp)
        token = doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("token answer lacks access_token")
        try:
            life = int(doc.get("expires_in", 1800))
        except (TypeError, ValueError):
            life = 1800
        self._token = token
        self._token_expires_ms = sent_ms + (life - min(TOKEN_MARGIN_S, life // 4)) * 1000
        self.state.save("token", {"client_id": reg["client_id"], "token": token,
                                  "expires_ms": self._token_expires_ms})
        if not reg.get("used") or reg.get("prev"):
            # The service has now seen the new secret: older registration tokens are dead (§B).
            reg["used"] = True
            reg["prev"] = []
            self._save(reg)
        # Decided after a token answer: the clock was just checked against the service's, so a wrong
        # device clock cannot trigger a needless rotation.
        self._rotate_if_due(reg)
        return token

    def status(self):
        """What a person may see: no secret, no token."""
        reg = self.registration()
        return {
            "client_id": self.config.client_id,
            "onboarded": reg is not None,
            "secret_expires_at": reg.get("expires_at") if reg else None,
            "rotation_due_at": self.rotation_due_at(reg),
            "token_valid_until_ms": self._token_expires_ms if self._token else None,
            "clock_correction_ms": self.clock.correction_ms,
            "last_rotation_error": self.last_rotation_error,
        }
