"""The rare paths of mcagent.Agent and mcagent.identity.Identity: what a wake needs once in a while (status)
or only on errors (the texts of ConfigError and DscError). Loaded per
use (mcagent._cold, compat.call_cold) and released at once, so the package and Identity, held through every
wake, stay small. Nothing here imports a big module while it is loaded (that would add this module to that
moment's heap), and no exception class lives here (except clauses must keep matching after a reload).
"""


def config_error_text(source, problems):
    """ConfigError's message: one problem in the line, more as a list."""
    if len(problems) == 1:
        return "%s: %s" % (source, problems[0])
    return "%s has %d problems:\n  - %s" % (source, len(problems), "\n  - ".join(problems))


def no_dsc():
    """Agent.store without a DSC to learn the data points from."""
    from mcagent.errors import DscError

    raise DscError(
        "the agent needs its data source configuration before record(): "
        "Agent(dsc=...) or agent.configure(dsc)"
    )


def status(ident):
    """Identity.status: what a person may see, no secret, no token."""
    reg = ident.registration()
    return {
        "client_id": ident.config.client_id,
        "onboarded": reg is not None,
        "secret_expires_at": reg.get("expires_at") if reg else None,
        "rotation_due_at": ident.rotation_due_at(reg),
        "token_valid_until_ms": ident._token_expires_ms if ident._auth else None,
        "clock_correction_ms": ident.clock.correction_ms,
        "last_rotation_error": getattr(ident, "last_rotation_error", None),
    }
