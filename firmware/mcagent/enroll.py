"""Enrolment: onboarding, secret rotation and recovery, fetching an access token (docs/protocol.md §A-§C).

The rules are in mcagent.identity's docstring. This is the code a wake needs only when its cached token is
near expiry or the secret is due: Identity imports it for those calls and releases it after (with the
client-assertion signing it pulls in: jwt, hmac256, b64), so an ordinary later wake does not hold it.
"""

from micropython import const

from mcagent import cjson, compat
from mcagent.clock import iso_ms
from mcagent.errors import NeedsOnboarding
from mcagent.http import HttpError, TransportError
from mcagent.identity import ClockError, ProtocolError

REGISTER_PATH = "/api/agentmanagement/v3/register"
TOKEN_PATH = "/api/agentmanagement/v3/oauth/token"
TOKEN_KEY_PATH = "/api/agentmanagement/v3/oauth/token_key"
TOKEN_MARGIN_S = const(60)  # a cached token is renewed this long before it expires
ROTATION_RETRY_S = const(600)  # a refused rotation (secret still valid) is tried again after this
_KEEP_PREVIOUS = const(5)  # earlier registration answers kept for recovery (as the Node.js library does)
PREVIOUS = "previous"  # state file of those answers: read only to recover, so a wake does not hold them
_FORM = (
    "grant_type=client_credentials"
    "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    "&client_assertion="
)


def _error(resp, what):
    """The HttpError for an unexpected answer (mcagent.httputil.http_error, loaded for the call)."""
    return compat.call_cold("mcagent.httputil", "http_error", resp, what)


def call(ident, method, path, headers, body=None, max_body=2048):
    """A request on the agent's connection; an absolute URL on another origin (a registration_client_uri
    may name one) goes over a connection of its own, verified like any other (Identity's connect)."""
    try:
        resp = ident.conn.request(method, path, headers, body, max_body)
    except ValueError:
        if "://" not in path or ident._connect is None:
            raise
        conn = ident._connect(path)
        try:
            resp = conn.request(method, path, headers, body, max_body)
        finally:
            conn.close()
    if resp.status != 401:  # on 401 the caller decides whether the clock is to blame
        ident.observe(resp)
    return resp


def ensure_sane_clock(ident):
    """Before signing: make sure the clock is after 2024, asking the server for its time if not."""
    if not ident.clock.is_sane():
        ident.observe(ident.conn.request("GET", TOKEN_KEY_PATH, None, None, 64))
        if not ident.clock.is_sane():
            raise ClockError(
                "device clock says %s and the server sent no usable Date: set the time"
                % iso_ms(ident.clock.now_ms())
            )


def save_registration(ident, reg):
    ident.state.save("registration", reg)
    ident._reg = reg
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


def _json(resp):
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ProtocolError("HTTP %d answer is not a JSON object" % resp.status)
    return doc


def onboard(ident):
    """Onboard with the IAT unless already done with it. Returns True when a registration was made."""
    reg = ident.registration()
    if reg is not None and not ident.new_key(reg):
        return False
    try:
        register(ident)
    except NeedsOnboarding:
        if reg is None:
            raise
        # A new key that does not work, beside a registration that may: keep going, don't retry it.
        reg["bad_key"] = ident.config.key_id
        save_registration(ident, reg)
        return False
    return True


def register(ident):
    cfg = ident.config
    resp = call(
        ident,
        "POST",
        REGISTER_PATH,
        {"Authorization": "Bearer " + cfg.iat, "Content-Type": "application/json"},
        b"{}",
    )
    if resp.status in (400, 401, 403, 409):
        exp = cfg.expiration_ms
        raise NeedsOnboarding(
            "the onboarding key in %s was refused (HTTP %d): used, expired or revoked%s. Download a new "
            "agentconfig.json for agent %s and install it; buffered data is kept."
            % (cfg.source, resp.status, " (expiry %s)" % iso_ms(exp) if exp else "", cfg.client_id)
        )
    if resp.status != 201:
        raise _error(resp, "onboarding")
    ident.invalidate_token()
    return save_registration(ident, from_answer(ident, _json(resp), None))


def from_answer(ident, doc, old):
    """A registration record from an onboarding (201) or rotation (200) answer."""
    for name in ("client_secret", "registration_access_token", "registration_client_uri"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise ProtocolError("registration answer lacks %s" % name)
    if doc.get("client_id", ident.config.client_id) != ident.config.client_id:
        raise ProtocolError("registration answer is for another agent")
    try:
        expires = int(doc.get("client_secret_expires_at") or 0)
    except (TypeError, ValueError):
        raise ProtocolError("client_secret_expires_at is not a number")
    reg = {
        "client_id": ident.config.client_id,
        "secret": doc["client_secret"],
        "expires_at": expires,
        "issued_at": ident.clock.now_s(),
        "rat": doc["registration_access_token"],
        "uri": doc["registration_client_uri"],  # as given: absolute (its own origin) or a path
        "key_id": ident.config.key_id,
        "used": False,
    }
    if old is not None:
        reg["key_id"] = old.get("key_id")
        prev = [{"rat": old["rat"], "uri": old["uri"], "expires_at": old.get("expires_at", 0)}]
        for p in previous(ident):
            if len(prev) < _KEEP_PREVIOUS and p.get("rat") != old["rat"]:
                prev.append(p)
        ident.state.save(PREVIOUS, prev)  # before the new registration: a cut between leaves both usable
        if old.get("bad_key"):
            reg["bad_key"] = old["bad_key"]
    return reg


def previous(ident):
    """Earlier registration answers ({rat, uri, expires_at}, newest first) kept for recovery."""
    prev = ident.state.load(PREVIOUS)
    return prev if isinstance(prev, list) else []


def rotate_with(ident, reg, cand):
    """PUT the rotation with cand's registration token; the new registration (saved) or the Response.

    The registration is marked `rotating` first: if the answer never arrives (the service may have rotated),
    the next token request that is refused knows a recovery is due, not a guess (see fetch_token)."""
    if not reg.get("rotating"):
        reg["rotating"] = True
        save_registration(ident, reg)
    resp = call(
        ident,
        "PUT",
        cand["uri"],
        {"Authorization": "Bearer " + cand["rat"], "Content-Type": "application/json"},
        ('{"client_id":%s}' % cjson.quote(ident.config.client_id)).encode(),
    )
    if resp.status != 200:
        return resp
    return save_registration(ident, from_answer(ident, _json(resp), reg))


def rotate(ident):
    """Rotate the secret now; returns the new registration. HttpError when the service refuses."""
    reg = ident.registration()
    if reg is None:
        raise NeedsOnboarding("agent %s is not onboarded" % ident.config.client_id)
    new = rotate_with(ident, reg, reg)
    if not isinstance(new, dict):
        raise _error(new, "secret rotation")
    return new


def rotate_if_due(ident, reg):
    """Rotate when due. A refusal or a network failure is remembered (and retried after a while), not
    raised: the caller has a valid token, the secret works until it expires, and if the service did
    rotate before the answer was lost, the next token request recovers (§B)."""
    due = ident.rotation_due_at(reg)
    now = ident.clock.now_s()
    if due is None or now < due or now < ident.retry_rotation_at:
        return reg
    try:
        reg = rotate(ident)
        ident.last_rotation_error = None
    except (HttpError, ProtocolError, TransportError) as e:
        ident.last_rotation_error = "%s: %s" % (type(e).__name__, e)
        ident.retry_rotation_at = now + ROTATION_RETRY_S
    return reg


def recover(ident):
    """Get a working secret when the current one is refused: rotate with the current registration
    token, then with older ones, then onboard with a new key from agentconfig.json if there is one.
    Raises NeedsOnboarding when nothing works."""
    reg = ident.registration()
    if reg is None:
        return register(ident)
    for cand in [reg] + previous(ident):
        new = rotate_with(ident, reg, cand)
        if isinstance(new, dict):
            return new
        if new.status not in (400, 401, 403, 404):
            raise _error(new, "secret rotation")
    if ident.new_key(reg):
        try:
            return register(ident)
        except NeedsOnboarding:
            pass
    exp = reg.get("expires_at")
    raise NeedsOnboarding(
        "agent %s is locked out: its client secret (expiry %s) and registration token are refused and "
        "the onboarding key in %s is used. Offboard the agent, download a new agentconfig.json and "
        "install it there; buffered data is kept and uploads after onboarding."
        % (ident.config.client_id, iso_ms(exp * 1000) if exp else "none", ident.config.source)
    )


def fetch_token(ident):
    reg = ident.registration()
    if reg is None or ident.new_key(reg):
        onboard(ident)
        reg = ident.registration()
    ensure_sane_clock(ident)
    from mcagent import jwt  # the signing code, only for this (onboarding does not sign)

    relearned = recovered = False
    while True:
        sent_ms = ident.clock.now_ms()
        body = (
            _FORM
            + jwt.client_assertion(reg["client_id"], ident.config.tenant, reg["secret"], sent_ms // 1000)
        ).encode()
        resp = call(
            ident, "POST", TOKEN_PATH, {"Content-Type": "application/x-www-form-urlencoded"}, body, 4096
        )
        if resp.status == 200:
            return accept(ident, resp, reg, sent_ms)
        if resp.status == 401 and not relearned:
            relearned = True
            if ident.observe(resp):
                continue  # our clock was wrong: sign again with the right time
        # Rotate only when the service says the secret expired (400, as MindConnect Library C does) or when
        # a rotation of ours may have happened unseen (its answer was lost). A 401 is no reason by itself
        # (the Node.js library never rotates on it): a needless rotation whose answer is lost locks us out.
        if (resp.status == 400 or (resp.status == 401 and reg.get("rotating"))) and not recovered:
            recovered = True
            reg = recover(ident)
            continue
        raise _error(resp, "access token")


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
    doc = _json(resp)
    token = doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise ProtocolError("token answer lacks access_token")
    try:
        life = int(doc.get("expires_in", 1800))
    except (TypeError, ValueError):
        life = 1800
    return "Bearer " + token, life


def accept(ident, resp, reg, sent_ms):
    auth, life = _token_answer(resp)
    resp = None
    keep_token(ident, auth, sent_ms + (life - min(TOKEN_MARGIN_S, life // 4)) * 1000)
    auth = None
    if not reg.get("used"):
        # The service has now seen the new secret: older registration tokens are dead (§B).
        reg["used"] = True
        save_registration(ident, reg)
        ident.state.remove(PREVIOUS)
    # Decided after a token answer: the clock was just checked against the service's, so a wrong
    # device clock cannot trigger a needless rotation.
    rotate_if_due(ident, reg)
