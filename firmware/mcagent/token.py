"""Fetching an access token (docs/protocol.md §C): sign a client assertion, POST it, keep the answer.

The rules are in mcagent.identity's docstring. This is the code a later wake needs when its cached token is
near expiry: Identity imports it for that and releases it after; the signing code (mcagent.jwt) is loaded
only to sign and released before the request goes out. Onboarding, rotation and recovery are in
mcagent.enroll, loaded only when one is due; the request helpers here (call, json_object, http_error,
save_registration) serve both.
"""

from micropython import const

from mcagent import compat
from mcagent.clock import iso_ms
from mcagent.identity import ClockError, ProtocolError

_TOKEN_PATH = const("/api/agentmanagement/v3/oauth/token")
_TOKEN_KEY_PATH = const("/api/agentmanagement/v3/oauth/token_key")
_TOKEN_MARGIN_S = const(60)  # a cached token is renewed this long before it expires
# Keys and a file name as constants (a literal of up to 10 characters is a name in the heap for good):
_ROTATING = const("rotating")  # the registration's keys (mcagent.enroll writes them)
_USED = const("used")
_PREVIOUS = const("previous")  # mcagent.enroll.PREVIOUS
_EXPIRES_IN = const("expires_in")
_FORM = const(
    "grant_type=client_credentials"
    "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    "&client_assertion="
)


def http_error(resp, what):
    """The HttpError for an unexpected answer (mcagent.httputil.http_error, loaded for the call)."""
    return compat.call_cold("mcagent.httputil", "http_error", resp, what)


def call(ident, method, path, headers, body=None, max_body=2048, precious=False):
    """A request on the agent's connection; an absolute URL on another origin (a registration_client_uri
    may name one) goes over a connection of its own, verified like any other (Identity's connect).

    precious: the answer carries a registration the service will not give again (it spent the onboarding
    key or the old secret), so reading its time (Identity.observe) must not cost it: a MemoryError there
    is let go, and the next answer corrects the clock."""
    try:
        resp = ident.conn.request(method, path, headers, body, max_body)
    except ValueError:
        if "://" not in path or ident._connect is None:
            raise
        if path[:8] != "https://" and ident.config.base_url[:8] == "https://":
            # a registration token must not leave in clear because an answer named a plain URL
            raise ProtocolError("the service named a plain http:// address for the registration: refused")
        conn = ident._connect(path)
        try:
            resp = conn.request(method, path, headers, body, max_body)
        finally:
            conn.close()
    if resp.status != 401:  # on 401 the caller decides whether the clock is to blame
        try:
            ident.observe(resp)
        except MemoryError:
            if not precious:
                raise
    return resp


def ensure_sane_clock(ident):
    """Before signing: make sure the clock is after 2024, asking the server for its time if not."""
    if not ident.clock.is_sane():
        ident.observe(ident.conn.request("GET", _TOKEN_KEY_PATH, None, None, 64))
        if not ident.clock.is_sane():
            raise ClockError(
                "device clock says %s and the server sent no usable Date: set the time"
                % iso_ms(ident.clock.now_ms())
            )


def save_registration(ident, reg):
    ident.state.save("registration", reg)
    ident.registered()
    return reg


def keep_token(ident, auth, expires_ms):
    """Cache a new access token, its Authorization value "Bearer <token>" (in RAM and in state, for the
    next wake)."""
    ident._auth = None  # drop the old one before building the new one
    ident._auth = auth
    ident._token_expires_ms = expires_ms
    ident.state.save(
        "token",
        {
            "client_id": ident.config.client_id,
            "token": memoryview(compat.utf8(auth))[7:],
            "expires_ms": expires_ms,
        },
    )


def json_object(resp):
    """The JSON object an answer carries; ProtocolError for anything else."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ProtocolError("HTTP %d answer is not a JSON object" % resp.status)
    return doc


def fetch_token(ident):
    """A new access token, cached (keep_token): onboarding first when there is no registration, signed
    again once when a 401 taught the clock, the secret recovered once when the service refuses it
    (mcagent.enroll)."""
    reg = ident.registration()
    if reg is None or ident.new_key(reg):
        _enroll(ident, "onboard")
        reg = ident.registration()
    ensure_sane_clock(ident)
    relearned = recovered = False
    while True:
        sent_ms = ident.clock.now_ms()
        body = _assertion_form(ident, reg, sent_ms)
        resp = call(
            ident, "POST", _TOKEN_PATH, {"Content-Type": "application/x-www-form-urlencoded"}, body, 4096
        )
        body = None  # not held while the answer is parsed: taking the token out is this step's peak
        if resp.status == 200:
            return accept(ident, resp, reg, sent_ms)
        if resp.status == 401 and not relearned:
            relearned = True
            if ident.observe(resp):
                continue  # our clock was wrong: sign again with the right time
        # Rotate only when the service says the secret expired (400, as MindConnect Library C does) or when
        # a rotation of ours may have happened unseen (its answer was lost). A 401 is no reason by itself
        # (the Node.js library never rotates on it): a needless rotation whose answer is lost locks us out.
        if (resp.status == 400 or (resp.status == 401 and reg.get(_ROTATING))) and not recovered:
            recovered = True
            reg = _enroll(ident, "recover")
            continue
        raise http_error(resp, "access token")


def _assertion_form(ident, reg, sent_ms):
    """The token request's form with a client assertion signed now. The signing code (mcagent.jwt; onboarding
    does not sign) is released before the request goes out, so it is not in the heap beside the answer."""
    from mcagent import jwt

    try:
        claims = (reg["client_id"], ident.config.tenant, reg["secret"], sent_ms // 1000)
        return (_FORM + jwt.client_assertion(*claims)).encode()
    finally:
        jwt = None
        compat.unload("mcagent.jwt")


def _after(b, key):
    """Index of the value after "key": in the JSON text b (spaces allowed around the colon), or -1."""
    i = b.find(key)
    if i < 0:
        return -1
    i += len(key)
    n = len(b)
    while i < n and b[i] in b" \t\r\n":
        i += 1
    if i >= n or b[i] != 58:  # ":"
        return -1
    i += 1
    while i < n and b[i] in b" \t\r\n":
        i += 1
    return i


def _token_answer(resp):
    """(Authorization value "Bearer <token>", expires_in) of a token answer.

    The usual answer, {"access_token":"<JWT>",...,"expires_in":N,...} (compact or spaced) in a buffer of our
    own, is read in place: "Bearer " is written over the 7 bytes before the token and the header value taken
    as one string, so the ~1 KB token is not held as a parsed object, a str and a header value at once (this
    is the peak of a wake that fetches a token). Anything else goes through the JSON parser."""
    b = resp.body
    i = _after(b, b'"access_token"') if isinstance(b, bytearray) and not resp.truncated else -1
    if 0 <= i < len(b) and b[i] == 34:  # '"' (the key before it leaves room for "Bearer ")
        i += 1
        j = b.find(b'"', i)
        e = k = _after(b, b'"expires_in"')
        if j > i and b.find(b"\\", i, j) < 0 and k >= 0:
            while e < len(b) and 48 <= b[e] <= 57:
                e += 1
            if k < e < len(b) and b[e] in b",} \r\n":
                life = int(bytes(b[k:e]))
                b[i - 7 : i] = b"Bearer "
                return str(memoryview(b)[i - 7 : j], "utf-8"), life
    doc = json_object(resp)
    token = doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise ProtocolError("token answer lacks access_token")
    try:
        life = int(doc.get(_EXPIRES_IN, 1800))
    except (TypeError, ValueError):
        life = 1800
    return "Bearer " + token, life


def accept(ident, resp, reg, sent_ms):
    auth, life = _token_answer(resp)
    resp = None
    keep_token(ident, auth, sent_ms + (life - min(_TOKEN_MARGIN_S, life // 4)) * 1000)
    auth = None
    if not reg.get(_USED):
        # The service has now seen the new secret: older registration tokens are dead (§B).
        reg[_USED] = True
        save_registration(ident, reg)
        ident.state.remove(_PREVIOUS)
    # Decided after a token answer: the clock was just checked against the service's, so a wrong
    # device clock cannot trigger a needless rotation.
    if ident.rotation_is_due(reg):
        _enroll(ident, "rotate_if_due", reg)


def _enroll(ident, name, *args):
    """A step of mcagent.enroll (onboard, recover, rotate_if_due), loaded for it and released after."""
    return compat.call_cold("mcagent.enroll", name, ident, *args)
