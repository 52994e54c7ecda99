"""agentconfig.json: the boarding configuration Insights Hub (or southgate) hands out for one agent.

Parsed and checked up front so that a wrong file fails at start-up with one message that names every
problem, instead of a 401 or a crash half-way through onboarding. The onboarding key (IAT) is a secret:
it never appears in a message or a repr. Needed once per start: Agent unloads this module after use,
which is why ConfigError and AgentConfig live in mcagent.errors, which stays.
"""

import hashlib
import json
from binascii import hexlify

from micropython import const

from mcagent import clock, compat
from mcagent.errors import AgentConfig, ConfigError

_PROFILE = const("SHARED_SECRET")
_ID_CHARS = const(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
_BASE_URL = const("baseUrl")  # the file's keys and the BOM as constants: no name in the heap for them
_CLIENT_ID = const("clientId")
_EXPIRATION = const("expiration")
_BOM = const("\ufeff")


def key_id(iat):
    """A short fingerprint of an onboarding key, so state can tell keys apart without storing one."""
    return hexlify(hashlib.sha256(iat.encode()).digest()[:8]).decode()


def split_url(url):
    """'https://host:port' -> (scheme, host, port); ValueError with the reason otherwise."""
    if "://" not in url:
        raise ValueError("must start with https:// (or http:// for a local test service)")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError("scheme must be https (or http for a local test service), not %r" % scheme)
    rest = rest.rstrip("/")
    if not rest or "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        raise ValueError("must be scheme://host[:port] without path, query or user info")
    port = 443 if scheme == "https" else 80
    host = rest
    if rest.startswith("["):  # [IPv6]:port
        end = rest.find("]")
        if end < 0:
            raise ValueError("unclosed [ in IPv6 host")
        host = rest[1:end]
        tail = rest[end + 1 :]
        if tail:
            if tail[0] != ":":
                raise ValueError("junk after IPv6 host")
            port = tail[1:]
    elif ":" in rest:
        host, port = rest.rsplit(":", 1)
    if isinstance(port, str):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("port must be a number from 1 to 65535")
        port = int(port)
    if not host:
        raise ValueError("host name is empty")
    return scheme, host, port


def _text(content, name, problems, what):
    value = content.get(name)
    if value is None:
        problems.append('"content.%s" is missing (%s)' % (name, what))
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append('"content.%s" must be a non-empty string (%s)' % (name, what))
        return None
    return value.strip()


def parse(doc, source="agentconfig.json"):
    """Check a decoded boarding configuration (dict). Returns AgentConfig or raises ConfigError."""
    if not isinstance(doc, dict):
        raise ConfigError(source, ["must be a JSON object with a \"content\" object"])
    content = doc.get("content")
    if not isinstance(content, dict):
        raise ConfigError(source, ['no "content" object: is this the agent\'s boarding configuration?'])
    problems = []

    base = _text(content, _BASE_URL, problems, "the gateway, e.g. https://southgate.eu1.mindsphere.io")
    if base is not None:
        try:
            split_url(base)
        except ValueError as e:
            problems.append('"content.baseUrl" %s' % e.args[0])
        base = base.rstrip("/")

    iat = _text(content, "iat", problems, "the initial access token used to onboard")
    if iat is not None and (iat.count(".") != 2 or " " in iat):
        problems.append('"content.iat" is not a JWT (three dot-separated parts)')

    client_id = _text(content, _CLIENT_ID, problems, "the agent id")
    if client_id is not None:
        bad = [c for c in memoryview(compat.utf8(client_id)) if c not in _ID_CHARS]
        if bad or len(client_id) > 64:
            problems.append(
                '"content.clientId" must be the agent id (normally 32 hex characters), got %r' % client_id
            )

    tenant = _text(content, "tenant", problems, "the tenant name")

    profiles = content.get("clientCredentialProfile")
    if profiles is not None:
        if isinstance(profiles, str):
            profiles = [profiles]
        if not isinstance(profiles, list) or _PROFILE not in profiles:
            problems.append(
                '"content.clientCredentialProfile" is %s: only %s agents are supported; '
                "create the agent with the SHARED_SECRET security profile" % (json.dumps(profiles), _PROFILE)
            )

    expiration_ms = None
    expiration = doc.get(_EXPIRATION)
    if expiration is not None:
        try:
            expiration_ms = clock.parse_iso(expiration)
        except (ValueError, TypeError):
            problems.append('"expiration" must be an ISO 8601 time, got %r' % (expiration,))

    if problems:
        raise ConfigError(source, problems)
    return AgentConfig(base, iat, client_id, tenant, expiration_ms, source, key_id(iat))


def load(path):
    """Read and check agentconfig.json at path. Raises ConfigError naming every problem."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError(
            path, ["cannot be read: put the agent's boarding configuration (agentconfig.json) there"]
        )
    text = text.lstrip(_BOM)  # a byte order mark left by some editors
    if not text.strip():
        raise ConfigError(path, ["is empty: download the agent's boarding configuration again"])
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError(path, ["is not valid JSON (truncated or edited by hand?)"])
    return parse(doc, path)
