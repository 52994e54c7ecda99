"""node.json: the board's checked configuration, as the runtime reads it at every boot.

`mcagent deploy` checks board.json and settings.json on the host (mcagent.board) and installs the result
as node.json, so the board never loads the validator. node.json records a digest of the two files it was
made from: when they changed on the board since (edited over mpremote, an older deploy), or when node.json
is missing, the runtime checks and compiles them once here and writes node.json for the next boots.
"""

import hashlib
import json
from binascii import hexlify

from micropython import const

from mcagent import compat
from runtime import Cfg

_NODE_JSON = const("node.json")
_SCALED = const(
    (
        "sample_ms",
        "upload_ms",
        "health_ms",
        "ntp_resync_ms",
        "retry_cap_ms",
        "wifi_backoff_ms",
        "min_deep_ms",
    )
)


def digest(board, settings):
    """What node.json was compiled from: sha256 of both files' bytes (b"" for a missing file), 16 hex."""
    h = hashlib.sha256(board or b"")
    h.update(b"\0")
    h.update(settings or b"")
    return hexlify(h.digest()[:8]).decode()


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def load(board="board.json", settings="settings.json", path=_NODE_JSON):
    """(board, settings) as Cfg objects from node.json (path); compiled from the two files (paths) when
    stale or missing.

    Raises mcagent.board.BoardError (a ConfigError) naming every wrong field."""
    board_text = _read(board)
    settings_text = _read(settings)
    doc = None
    text = _read(path)
    if text is not None:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
    text = None
    want = digest(board_text, settings_text) if board_text is not None else None
    if not isinstance(doc, dict) or doc.get("node") != 1 or (want is not None and doc.get("sources") != want):
        if board_text is None:
            from mcagent.board import BoardError

            raise BoardError(board, ["cannot be read: put the board definition there (mcagent deploy)"])
        doc = compile_files(board, settings, want)
        try:
            compat.write_atomic(path, compat.utf8(json.dumps(doc)))
        except OSError:  # a full flash: run from the compiled copy in RAM, try again next boot
            return split(doc)
    board, settings = split(doc)
    board.node_json = path  # where part() finds the sensors and the DSC again
    return board, settings


def part(path, name):
    """One big part of node.json ("sensors", "dsc"), read again when a phase needs it: a deep-sleeping node
    does not hold them through its upload, the heap peak of a wake (the parsed file costs ~10 KB)."""
    with open(path) as f:
        return json.load(f)[name]  # parsed from the stream: no 3 KB string needed in a fragmented heap


def compile_files(b, s, sources):
    """Check and compile board.json and settings.json (paths b and s) with mcagent.board (against the sensor
    drivers), then release the validator."""
    import sensors
    from mcagent import board

    try:
        return board.compile(board.load(b, sensors), board.load_settings(s), sources)
    finally:
        board = None
        compat.unload("mcagent.board")
        compat.unload("mcagent.dsc")  # its checks ran in board.parse


def from_docs(b, s):
    """(board, settings) from decoded documents b and s: board.json/settings.json content (checked here) or
    a compiled node.json; tests and tools pass these."""
    if isinstance(b, dict) and b.get("node") == 1:
        return split(b)
    import sensors
    from mcagent import board

    if not hasattr(b, "sensors"):
        b = board.parse(b, "board.json", sensors)
    if s is None or isinstance(s, dict):
        s = board.parse_settings(s or {})
    return split(board.compile(b, s))


def split(doc):
    settings = Cfg(doc.get("settings") or {})
    return Cfg(doc), settings


def scaled(cfg, speed):
    """The schedule compressed by speed (the unix board's fast-forward); timestamps stay real."""
    if speed and speed != 1:
        for name in _SCALED:
            setattr(cfg, name, max(1, int(getattr(cfg, name) / speed)))
        cfg.speed = speed
    return cfg
