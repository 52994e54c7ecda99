"""Who the agent is to the service: onboarding, access tokens, secret rotation and recovery
(docs/protocol.md §A-§C).

Rules, in the order they apply (each one is there because an agent in the field got locked out without it):
- Onboard once with the IAT (201); the registration is saved atomically before anything else happens.
- Never sign an assertion with a clock before 2024: ask the server for its time first. A 401 whose
  `Server-Time`/`Date` disagrees with our clock teaches the clock and is retried once. The learned
  correction is kept in state.
- Rotate the secret when less than min(25 h, half its lifetime) is left (Node's 25 h rule; the half-life
  cap stops an endless rotation loop on services with short-lived secrets). The check runs on every
  token() and after each token answer (the clock has just been checked against the service's then).
- Rotate when the token endpoint answers 400 (MCL's sign of an expired secret), never on a 401 by itself
  (a bad assertion, most often a clock: corrected and retried once). A rotation whose answer was lost (cut
  after the service answered, before the save) is marked before it is sent, so a later refused token
  request recovers it: the service accepts the previous registration access token until the new secret has
  been used (§B). Older registration tokens are kept for the case where the service is behind
  us, and dropped once the current secret has earned a token.
- When no registration token works and agentconfig.json holds no unused key: `NeedsOnboarding`.
  A new agentconfig.json for the same agent is used as soon as it appears; the data store is untouched.

State files (see mcagent.state): "registration" {client_id, secret, expires_at, issued_at, rat, uri,
key_id, used, rotating?, bad_key?}, "previous" [{rat, uri, expires_at}] (up to 5 earlier answers, read only
to recover), "token" {client_id, token, expires_ms},
"clock" {correction_ms, device_sane}.

This module keeps what every wake uses (the cached token, the clock, the registration's expiry). Fetching
a token (and the requests, token caching and clock checks it makes) lives in mcagent.token, loaded when the
cached token is near expiry; onboarding, rotation and recovery in mcagent.enroll, loaded only when one is
due; status() in mcagent.agentutil.
"""

from micropython import const

from mcagent import compat
from mcagent.clock import SANE_AFTER_S

_ROTATE_BEFORE_S = const(90000)  # 25 h
_LEARN_SKEW_MS = const(10000)  # a server clock this far from ours is adopted
_RELEARN_MS = const(3600000)  # after one answer's time was read, the next are read again this much later
_UNREAD = const(-1)  # _due_s before the registration was read (a due time is never negative)


class ProtocolError(Exception):
    """The service answered something the protocol does not allow (e.g. a registration without a secret)."""


class ClockError(Exception):
    """The device clock is before 2024 and the service did not tell us the time."""


class Identity:
    """Registration, token cache and clock correction of one agent, kept in a State directory.

    conn: an http.Connection-like object (only .request is used), or a function that returns one when
    first needed (a wake-up with a cached token then opens nothing); clock: clock.Clock.
    """

    def __init__(self, config, state, conn, clock, connect=None):
        self.config = config
        self._connect = connect  # url -> a new connection to that URL's origin (same CAs, proxy)
        self.state = state
        self._conn = conn
        self.clock = clock
        self.retry_rotation_at = 0  # a refused rotation waits until then (last_rotation_error says why)
        self._due_s = _UNREAD  # rotation_due_at() of the saved registration, read once per registration
        self._auth = None  # "Bearer <token>": the cached token kept once, as the header needs it (~1 KB)
        self._token_expires_ms = 0
        self._read_at = None  # clock.device_ms() when an answer's time was last read
        saved = state.load("clock")
        # A correction learned while the device clock was insane is void once someone (NTP) set the clock.
        if saved and (saved.get("device_sane") or clock.device_ms() // 1000 < SANE_AFTER_S):
            clock.correction_ms = saved.get("correction_ms", 0)
        tok = state.load("token")
        if tok and tok.get("client_id") == config.client_id:
            t = tok.get("token")
            if isinstance(t, str):
                self._auth = "Bearer " + t
                self._token_expires_ms = tok.get("expires_ms", 0)

    def __repr__(self):
        return "<Identity %s onboarded=%s>" % (self.config.client_id, self.registration() is not None)

    @property
    def conn(self):
        if not hasattr(self._conn, "request"):
            self._conn = self._conn()
        return self._conn

    def observe(self, resp):
        """Adopt the server's time from a response when ours is off by 10 s or more; the correction is
        saved. Returns True when the clock was corrected.

        An answer's time is read when the clock is not sane yet, on a 401 (a wrong clock may be why) and
        once an hour: not per batch of an upload, so the date parsing (mcagent.clockutil) is not in the heap
        at the flush, a wake's peak. A clock drifts far less than the 10 s that count in an hour."""
        clock = self.clock
        now = clock.device_ms()
        read = self._read_at
        if resp.status != 401 and read is not None and 0 <= now - read < _RELEARN_MS and clock.is_sane():
            return False
        h = resp.headers
        before = clock.correction_ms
        if not clock.learn_from_headers(h.get("server-time"), h.get("date")):
            return False
        self._read_at = now
        if -_LEARN_SKEW_MS < clock.correction_ms - before < _LEARN_SKEW_MS:
            clock.correction_ms = before  # within the noise of a 1-second Date: keep the old value
            return False
        self.state.save(
            "clock",
            {"correction_ms": clock.correction_ms, "device_sane": clock.device_ms() // 1000 >= SANE_AFTER_S},
        )
        return True

    def registration(self):
        """The saved registration of this agent (dict), or None before onboarding. Read from flash each
        time: it is asked for once or twice a wake, and the heap need not hold it (with its registration
        token ~0.5 KB) through the upload; what every request needs from it is its rotation time."""
        reg = self.state.load("registration")
        if reg and reg.get("client_id") == self.config.client_id and reg.get("secret"):
            return reg
        return None

    def registered(self):
        """A registration was saved (mcagent.token.save_registration): its rotation time is read again."""
        self._due_s = _UNREAD

    def new_key(self, reg):
        """True when agentconfig.json holds an onboarding key this registration was not made with."""
        key = self.config.key_id
        return key != reg.get("key_id") and key != reg.get("bad_key")

    def rotation_due_at(self, reg=None):
        """Unix seconds from which the secret should be rotated (None: never expires / not onboarded).

        The board runtime must wake up before this (and well before the secret's expiry) to stay in."""
        if reg is None:
            if self._due_s == _UNREAD:
                reg = self.registration()
                self._due_s = None if reg is None else self.rotation_due_at(reg)
            return self._due_s
        if not reg.get("expires_at"):
            return None
        expires = reg["expires_at"]
        return expires - min(_ROTATE_BEFORE_S, max(expires - reg.get("issued_at", expires), 0) // 2)

    def token(self):
        """A valid access token: the cached one, or a new one (onboarding and rotating first if due). After
        the service refused a token (401): invalidate_token(), then token() or authorization()."""
        return self.authorization()[7:]

    def authorization(self):
        """The Authorization header value ("Bearer <token>") for a valid token; the same string object
        while the token lasts (a token is ~1 KB: a new copy per request is garbage that fragments a small
        heap)."""
        if self._auth is not None and self.clock.now_ms() < self._token_expires_ms:
            if self.rotation_is_due():
                self._enroll("rotate_if_due", "mcagent.enroll", self.registration())
        else:
            self._enroll("fetch_token", "mcagent.token")
        return self._auth

    def rotation_is_due(self, reg=None):
        """Due by the expiry rule and not refused a moment ago (mcagent.enroll.ROTATION_RETRY_S). reg: a
        registration in hand (default: the saved one)."""
        due = self.rotation_due_at(reg)
        now = self.clock.now_s()
        return due is not None and now >= due and now >= self.retry_rotation_at

    def onboard(self):
        """Onboard with the IAT unless already done with it. Returns True when a registration was made."""
        reg = self.registration()
        if reg is not None and not self.new_key(reg):
            # The IAT (~1 KB) was used or refused with this key: it is not held through the upload (a
            # registration drops it too). Were the registration lost, mcagent.enroll reads it again.
            self.config.iat = None
            return False
        return self._enroll("onboard")

    def rotate(self):
        """Rotate the secret now; returns the new registration. HttpError when the service refuses."""
        return self._enroll("rotate")

    def recover(self):
        """Get a working secret when the current one is refused (see mcagent.enroll.recover)."""
        return self._enroll("recover")

    def fetch_token(self):
        """A new access token from the service (onboarding first, recovering a refused secret)."""
        self._enroll("fetch_token", "mcagent.token")
        return self._auth[7:]

    def _enroll(self, name, module="mcagent.enroll", *args):
        """Run one step of mcagent.enroll (or mcagent.token), then release it and the token code enroll uses
        (mcagent.token releases its signing code itself)."""
        try:
            return compat.call_cold(module, name, self, *args)
        finally:
            compat.unload("mcagent.token")

    def invalidate_token(self):
        """Forget the cached token (the service answered 401 to it)."""
        if self._auth is not None:
            self._auth = None
            self._token_expires_ms = 0
            self.state.remove("token")

    def status(self):
        """What a person may see: no secret, no token (mcagent.agentutil)."""
        return compat.call_cold("mcagent.agentutil", "status", self)
