"""Enrolment: onboarding, secret rotation and recovery (docs/protocol.md §A-§B).

The rules are in mcagent.identity's docstring. This is the code a wake needs only when it onboards, its
secret is due or refused: Identity (and mcagent.token, when a token request finds one of those) imports it
for that step and releases it after. Fetching a token, what a later wake does, is in mcagent.token.
"""

from micropython import const

from mcagent import cjson, compat
from mcagent.clock import iso_ms
from mcagent.errors import ConfigError, NeedsOnboarding
from mcagent.http import HttpError, TransportError
from mcagent.identity import ProtocolError
from mcagent.token import call, http_error, json_object, save_registration

_REGISTER_PATH = const("/api/agentmanagement/v3/register")
ROTATION_RETRY_S = const(600)  # a refused rotation (secret still valid) is tried again after this
_KEEP_PREVIOUS = const(5)  # earlier registration answers kept for recovery (as the Node.js library does)
PREVIOUS = "previous"  # state file of those answers: read only to recover, so a wake does not hold them


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
    iat = cfg.iat
    if iat is None:  # dropped once used (Identity.onboard): the file still holds it, unless it changed
        try:
            again = compat.call_cold("mcagent.config", "load", cfg.source)
        except ConfigError as e:
            raise NeedsOnboarding(str(e))  # the file is gone or broken: the same as a used key
        if again.key_id != cfg.key_id:
            raise NeedsOnboarding("%s changed while the agent ran: start it again" % cfg.source)
        iat = again.iat
    resp = call(
        ident,
        "POST",
        _REGISTER_PATH,
        {"Authorization": "Bearer " + iat, "Content-Type": "application/json"},
        b"{}",
        precious=True,
    )
    iat = None
    if resp.status in (400, 401, 403, 409):
        exp = cfg.expiration_ms
        raise NeedsOnboarding(
            "the onboarding key in %s was refused (HTTP %d): used, expired or revoked%s. Download a new "
            "agentconfig.json for agent %s and install it; buffered data is kept."
            % (cfg.source, resp.status, " (expiry %s)" % iso_ms(exp) if exp else "", cfg.client_id)
        )
    if resp.status not in (200, 201):  # 201 is the service's; a 200 carries the registration all the same
        raise http_error(resp, "onboarding")
    cfg.iat = None  # spent: the heap need not hold it (~1 KB) through the rest of the run
    reg = keep_answer(ident, resp, None)
    ident.invalidate_token()
    return reg


def keep_answer(ident, resp, old):
    """The registration an onboarding or rotation answer carries, saved. The service has spent the key or
    the old secret: a MemoryError gets one more try once the garbage is collected, as the answer is in
    hand and will not come again."""
    if not ident.clock.is_sane():  # its time was let go (token.call): issued_at needs it
        compat.heap_free()
        try:
            ident.observe(resp)
        except Exception:  # MemoryError again, a full flash saving the clock: the answer matters more
            pass
    try:
        return save_registration(ident, from_answer(ident, json_object(resp), old))
    except MemoryError:
        compat.heap_free()
        return save_registration(ident, from_answer(ident, json_object(resp), old))


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
        precious=True,
    )
    if resp.status not in (200, 201):  # 200 is the service's; a 201 carries the new secret all the same
        return resp
    return keep_answer(ident, resp, reg)


def rotate(ident):
    """Rotate the secret now; returns the new registration. HttpError when the service refuses."""
    reg = ident.registration()
    if reg is None:
        raise NeedsOnboarding("agent %s is not onboarded" % ident.config.client_id)
    new = rotate_with(ident, reg, reg)
    if not isinstance(new, dict):
        raise http_error(new, "secret rotation")
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
            raise http_error(new, "secret rotation")
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
