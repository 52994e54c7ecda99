"""Starting the node: its configuration from node.json (or board.json + settings.json, checked), and a
board's start and end (STOP file, safe pin, configuration errors at the REPL instead of a reset loop).

Loaded when needed and released at once (main.py reaches it through mcagent.compat.call_cold).
"""

from mcagent import ConfigError, compat


def configure(board, settings):
    """(board, settings) as the runtime uses them: from paths (node.json, compiled from board.json and
    settings.json when needed), from decoded documents (checked here), or as they are if already loaded."""
    if hasattr(board, "sample_ms") and not hasattr(board, "points"):
        return board, settings
    from runtime import nodecfg

    try:
        if board is None or isinstance(board, str):
            return nodecfg.load(board or "board.json", settings or "settings.json")
        if isinstance(settings, str):
            from mcagent.board import load_settings

            settings = load_settings(settings)
        return nodecfg.from_docs(board, settings)
    finally:
        nodecfg = None
        compat.unload("runtime.nodecfg")


def prepare(hw=None):
    """On a board (boot runs main.py): (board, settings, hw) from the flash root with the real modules, or
    None when the node must stay at the REPL (wrong configuration, STOP file, safe pin held low)."""
    if hw is None:
        hw = compat.call_cold("runtime.hwcold", "detect")
    try:
        b, settings = configure(None, None)
    except ConfigError as e:
        print("mcagent: not starting:", e)
        return None
    if compat.exists("STOP") or (
        b.safe_pin is not None and compat.call_cold("runtime.hwcold", "pin_low", hw, b.safe_pin)
    ):
        print("mcagent: STOP file or safe pin: staying at the REPL")
        return None
    return b, settings, hw


def crashed(exc, settings, hw):
    """The node died after the watchdog started: note it on flash and sleep 10 minutes, so the watchdog
    does not reset the board in a tight loop."""
    from mcagent.runlog import RunLog, describe

    RunLog(settings.runlog).add("boot: " + describe(exc))
    compat.print_exception(exc)
    hw.deepsleep(600000)
