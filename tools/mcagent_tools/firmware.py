"""Run the firmware's own pure-Python code on the host (CPython), e.g. board.json checks at deploy.

The firmware imports `micropython` for `const()`; CPython has no such module, so a minimal stand-in is
registered (only if none is there: host tests put their own fake on sys.path).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

from mcagent_tools.build import FIRMWARE


def module(name: str) -> Any:
    """Import a firmware module (e.g. "mcagent.board", "runtime.nodecfg") into this interpreter."""
    if "micropython" not in sys.modules:
        try:
            __import__("micropython")
        except ImportError:
            shim = types.ModuleType("micropython")
            shim.const = lambda value: value  # type: ignore[attr-defined]
            sys.modules["micropython"] = shim
    if str(FIRMWARE) not in sys.path:
        sys.path.append(str(FIRMWARE))
    mod: Any = __import__(name, fromlist=["_"])
    if name == "mcagent.board" and mod.DRIVERS is None:
        # board.json is checked against the application's sensor drivers, which the library (mcagent) does
        # not import: the host, like the node runtime, hands them in
        mod.DRIVERS = __import__("sensors")
    return mod


def node_json(board_json: Path, settings_json: Path | None = None) -> dict[str, Any]:
    """node.json as the board reads it: board.json and settings.json checked by the firmware's validator
    (raises its BoardError naming each wrong field) and compiled, with the digest of both files' bytes."""
    board = module("mcagent.board")
    nodecfg = module("runtime.nodecfg")
    board_text = board_json.read_bytes()
    settings_text = settings_json.read_bytes() if settings_json is not None else None
    try:
        board_doc = json.loads(board_text)
    except ValueError as e:
        raise board.BoardError(str(board_json), [f"is not valid JSON ({e})"]) from None
    try:
        settings_doc = json.loads(settings_text) if settings_text is not None else {}
    except ValueError as e:
        raise board.BoardError(str(settings_json), [f"is not valid JSON ({e})"]) from None
    return dict(
        board.compile(
            board.parse(board_doc, str(board_json)),
            board.parse_settings(settings_doc, str(settings_json or "settings.json")),
            nodecfg.digest(board_text, settings_text),
        )
    )
