"""The exception classes of mcagent (and AgentConfig), in a small module that stays loaded: the modules that
raise them (config, board, dsc, enroll, storeboot) are cold code, unloaded after use, and an `except`
clause must keep matching the class whichever copy of a module raised it. The package re-exports them
(`from mcagent import ConfigError`); the submodules import them from here, never from the package.

Also here, as the one small module every part can import without loading a big one: TYPES, the data point
types (the DSC and board.json checks must not load the 6 KB store just for this list)."""

from mcagent import compat

# The MindConnect data point types; a type's code on flash is its index + 1 (store.TYPES is this list).
TYPES = ("DOUBLE", "INT", "LONG", "BOOLEAN", "STRING", "BIG_STRING", "TIMESTAMP")


class ConfigError(ValueError):
    """agentconfig.json is missing or wrong; `.problems` lists each problem as its own sentence."""

    def __init__(self, source, problems):
        self.source = source
        self.problems = problems
        super().__init__(compat.call_cold("mcagent.agentutil", "config_error_text", source, problems))


class BoardError(ConfigError):
    """board.json or settings.json is wrong; `.problems` lists one sentence per wrong field."""


class NeedsOnboarding(Exception):
    """The agent cannot authenticate any more (secret and registration token refused, onboarding key used
    or expired): only a new agentconfig.json helps. Buffered data is kept; nothing is retried in a loop."""


class DscError(ValueError):
    """The data source configuration description is wrong; the message names the source or point."""


class MappingError(Exception):
    """The service refused a data point mapping (unknown asset/aspect/property, type or unit mismatch)."""


class AgentConfig:
    """The checked content of agentconfig.json (see mcagent.config). The IAT never shows in its repr."""

    def __init__(self, base_url, iat, client_id, tenant, expiration_ms, source, key_id):
        self.base_url = base_url
        self.iat = iat
        self.client_id = client_id
        self.tenant = tenant
        self.expiration_ms = expiration_ms  # when the IAT expires (Unix ms), None if not given
        self.source = source
        self.key_id = key_id  # fingerprint of the IAT: tells keys apart without storing one

    def __repr__(self):
        return "<AgentConfig %s tenant=%s base=%s>" % (self.client_id, self.tenant, self.base_url)
