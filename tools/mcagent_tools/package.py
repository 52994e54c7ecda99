"""package.json at the repository root: what `mpremote mip install github:OWNER/REPO` puts on a board.

mip installs each `urls` entry under /lib (`mcagent/http.py` -> /lib/mcagent/http.py); relative URLs are
fetched from the same repository and branch as package.json. The list is generated from firmware/ (every
.py except the top-level scripts main.py/boot.py, which are the board's own) and a test keeps it in sync:

    mcagent package-json            # rewrite package.json
    mcagent package-json --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .build import FIRMWARE, ROOT, board_sources
from .layout import SCRIPTS

PACKAGE_JSON = ROOT / "package.json"
# mip ignores keys it does not know; this one tells a reader of package.json which boards it suits.
MIP_NOTE = (
    "Installs the agent as .py source, compiled on the board at import: a wake then needs ~108 KB of GC "
    "heap (80 KB as .mpy), enough for an ESP32-C3 or -S3 or a board with PSRAM. On an ESP32 without "
    "PSRAM use `mcagent deploy` (.mpy, see docs/deploy.md)."
)


def library_sources(firmware: Path = FIRMWARE) -> list[Path]:
    """firmware-relative paths of the library files (what goes under /lib)."""
    rels = [p.relative_to(firmware) for p in board_sources(firmware)]
    return [r for r in rels if not (len(r.parts) == 1 and r.name in SCRIPTS)]


def firmware_version(firmware: Path = FIRMWARE) -> str:
    text = (firmware / "mcagent" / "__init__.py").read_text()
    match = re.search(r"^VERSION\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
    return match.group(1) if match else "0.0.0"


def render(firmware: Path = FIRMWARE, root: Path = ROOT) -> str:
    prefix = firmware.resolve().relative_to(root.resolve()).as_posix()
    urls = [json.dumps([r.as_posix(), f"{prefix}/{r.as_posix()}"]) for r in library_sources(firmware)]
    return (
        '{\n  "urls": [\n    '
        + ",\n    ".join(urls)
        + f'\n  ],\n  "deps": [],\n  "version": {json.dumps(firmware_version(firmware))},\n'
        + f'  "comment": {json.dumps(MIP_NOTE)}\n}}\n'
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="only check; exit 1 when package.json is stale")


def run(args: argparse.Namespace) -> int:
    wanted = render()
    have = PACKAGE_JSON.read_text() if PACKAGE_JSON.exists() else ""
    if args.check:
        if have != wanted:
            print("package.json is out of date: run `mcagent package-json`", file=sys.stderr)
            return 1
        print("package.json is up to date")
        return 0
    if have != wanted:
        PACKAGE_JSON.write_text(wanted)
        print(f"wrote {PACKAGE_JSON}")
    else:
        print("package.json is up to date")
    return 0
