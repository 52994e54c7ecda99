"""Where mcagent's files live on a board: the one place the host tools name device paths.

The firmware reads the same paths (it cannot import this module: nothing in firmware/ imports tools/),
so a change here is a change of contract — update docs/deploy.md and the firmware together.
"""

from __future__ import annotations

from pathlib import PurePosixPath

#: Compiled libraries: firmware/<pkg>/*.py -> /lib/<pkg>/*.mpy (on sys.path of every MicroPython port).
LIB_DIR = "/lib"
#: The agent package, compiled to .mpy.
PACKAGE_DIR = "/lib/mcagent"
#: What a board runs after boot: a two-line stub that imports the compiled runtime (firmware/main.py is too
#: big to compile on a board: as source it did not compile in 160 KB of heap, see docs/boards.md).
MAIN = "/main.py"
#: firmware/main.py, compiled, under this module name in /lib.
RUNTIME_MODULE = "mcnode"
MAIN_STUB = f"import {RUNTIME_MODULE}\n{RUNTIME_MODULE}.main()\n"
#: An optional boot script, if the firmware has one (kept as source, like main.py).
BOOT = "/boot.py"
#: The board description (pins, sensors, ...) from boards/<name>/board.json.
BOARD_JSON = "/board.json"
#: board.json + settings.json as deploy checked and compiled them (firmware/runtime/nodecfg.py): what the
#: board reads at each boot, so the validator never loads there. Holds the Wi-Fi key: owner-only.
NODE_JSON = "/node.json"
#: The agent's boarding configuration from Insights Hub (holds the onboarding key: a secret).
AGENTCONFIG = "/agentconfig.json"
#: Local settings: Wi-Fi network and key (a secret), intervals.
SETTINGS = "/settings.json"
#: CA certificates as DER, one certificate per file; the firmware loads every *.der here.
CERTS_DIR = "/certs"
#: File name of Insights Hub's root CA under CERTS_DIR.
INSIGHTS_HUB_ROOT_DER = "digicert-global-root-g2.der"

#: Files the firmware writes (read by `mcagent status` when the firmware has no status report; names are
#: the firmware's: see docs/boards.md). The node runtime's counters, and the agent's default state dir
#: (settings.json "state_dir"; the firmware's default is mcagent.board.Settings.state_dir, a test keeps the
#: two equal). Not "mcagent": a directory of that name in / would shadow the package in /lib.
NODE_STATE = "/node/state"
DEFAULT_STATE_DIR = "agent-state"

#: The firmware's off switch: while this file exists, main.py stays at the REPL (no agent, no watchdog).
STOP_FILE = "/STOP"

#: How the agent starts on a virtual board (`mcagent vboard`), as a board does at boot: run /main.py. (On
#: the Unix port the runtime's main() takes the current directory, the board's root, as its flash.)
VBOARD_START = "import main"

#: Top-level scripts a board runs by name (not library modules; package.json leaves them out).
SCRIPTS = ("main.py", "boot.py")


def device_path_for_source(rel: PurePosixPath) -> PurePosixPath:
    """firmware-relative source path -> device path of what deploy installs for it.

    `mcagent/http.py` -> `/lib/mcagent/http.mpy`, `util.py` -> `/lib/util.mpy`, `main.py` ->
    `/lib/mcnode.mpy` (and /main.py is the stub), `boot.py` -> `/boot.py` (small, kept as source).
    """
    if rel == PurePosixPath("main.py"):
        return PurePosixPath(LIB_DIR) / f"{RUNTIME_MODULE}.mpy"
    if len(rel.parts) == 1 and rel.name in SCRIPTS:
        return PurePosixPath("/") / rel
    return PurePosixPath(LIB_DIR) / rel.with_suffix(".mpy")


def cert_device_path(name: str) -> str:
    return f"{CERTS_DIR}/{name}"
