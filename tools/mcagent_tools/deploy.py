"""Install the agent on a board: compiled firmware, board description, agent configuration, CA certificates.

    mcagent deploy --port /dev/ttyUSB0 --board esp32_generic --config agentconfig.json --settings s.json
    mcagent deploy ... --dry-run                 # print the mpremote commands instead (touches no board)
    mcagent deploy --board B --settings S --config-dir configs/ --port P1 --port P2 ...   # many boards

Steps, each an mpremote command (--dry-run prints exactly these; -v prints them as they run):
  1. ask the board for its MicroPython and .mpy version; refuse if it can't load what mpy-cross makes;
  2. copy /lib/<package>/*.mpy, /lib/mcnode.mpy (firmware/main.py) with a two-line /main.py that runs it,
     /board.json, /agentconfig.json, /settings.json, /certs/*.der
     (mpremote skips files whose SHA-256 already matches, so a second deploy copies nothing unchanged),
     remove stale files from the agent's own directories, and read back every file's SHA-256;
  3. reset the board, which then runs /main.py (a virtual board restarts; it runs main.py with --run-main).
Secrets (the onboarding token in agentconfig.json, the Wi-Fi key) go only to the board: commands name
files, never their content. The firmware is compiled on the host first (into --build-dir).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import firmware as host_firmware
from . import layout
from .build import (
    FIRMWARE,
    LINE_NUMBERS,
    OPTIMISE,
    ROOT,
    board_sources,
    compile_file,
    module_name,
    mpy_cross_path,
)
from .certs import CertError, DerCert, der_certs, write_der_dir
from .mpytarget import (
    IncompatibleDevice,
    MpyTarget,
    check_compatible,
    cross_flags,
    cross_version,
    guard_code,
    uses_native_code,
)
from .runner import Result, ToolError, port_problem, shell_line, tool_path
from .runner import run as run_tool

BOARDS = ROOT / "boards"
BUILD = ROOT / "build" / "deploy"
PROBE_TAG = "MCAGENT-PROBE"


class DeployError(Exception):
    """Deploy cannot go on; the message says why and what to do."""


# inputs -------------------------------------------------------------------------------------------------
def read_json_object(path: Path, what: str) -> dict[str, object]:
    """A JSON object from path; errors name the file and the position, never the content (secrets)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DeployError(f"{path}: cannot read {what} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DeployError(f"{path}: {what} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        pos = f"line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else "?"
        raise DeployError(f"{path}: {what} is not valid JSON ({pos})") from None
    if not isinstance(doc, dict):
        raise DeployError(f"{path}: {what} must be a JSON object")
    return doc


def agent_id(config: Path) -> str:
    """The agent id (content.clientId) of a boarding configuration, checked here by the firmware's own
    validator (mcagent.config): a file the board would refuse at boot is refused before anything is copied.
    """
    doc = read_json_object(config, "the agent's boarding configuration")
    fw_config = host_firmware.module("mcagent.config")
    try:
        fw_config.parse(doc, str(config))
    except ValueError as e:  # mcagent.ConfigError: one sentence per problem, never the key itself
        raise DeployError(str(e)) from None
    content = doc.get("content")
    if not isinstance(content, dict):
        raise DeployError(f'{config}: no "content" object: is this an agentconfig.json from Insights Hub?')
    missing = [k for k in ("baseUrl", "iat", "clientId", "tenant") if not isinstance(content.get(k), str)]
    if missing:
        raise DeployError(
            f"{config}: content lacks {', '.join(missing)}: download the boarding configuration again"
        )
    client_id = str(content["clientId"])
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", client_id):
        raise DeployError(f"{config}: content.clientId is not an agent id")
    return client_id


def board_json(board: str, boards_dir: Path = BOARDS) -> Path:
    """--board: a board of boards/ by name, or the path of a board.json anywhere (a user's own board)."""
    own = Path(board)
    if board.endswith(".json") or own.is_file() or (own.is_dir() and (own / "board.json").is_file()):
        path = own / "board.json" if own.is_dir() else own
        if not path.is_file():
            raise DeployError(f"{path}: no such board definition")
        read_json_object(path, "board description")
        return path
    path = boards_dir / board / "board.json"
    if not path.is_file():
        known = sorted(p.parent.name for p in boards_dir.glob("*/board.json"))
        raise DeployError(
            f"no board {board!r} ({path} missing); known boards: {', '.join(known) or 'none yet'}"
        )
    read_json_object(path, "board description")
    return path


def chip_mismatch(chip: str | None, platform: str, machine: str) -> str | None:
    """Why board.json's "chip" does not fit the device (sys.platform, sys.implementation._machine), if so."""
    if not chip:
        return None
    chip = chip.lower()
    if chip == "unix":
        if platform in ("linux", "darwin"):
            return None
        return f"board.json is for the Unix port but the device is {platform!r} ({machine}): wrong --board?"
    if not chip.startswith("esp32"):
        return None  # a chip this check does not know: trust the user
    if platform != "esp32":
        return f"board.json is for an {chip} but the device is {platform!r} ({machine}): wrong --board?"
    variant = re.findall(r"ESP32-?([SCH]\d+|P4)", machine.upper())
    device_chip = "esp32" + variant[0].replace("-", "").lower() if variant else "esp32"
    if device_chip != chip:
        return f"board.json is for an {chip} but the device says {machine!r}: wrong --board?"
    return None


# build --------------------------------------------------------------------------------------------------
@dataclass
class Bundle:
    """What every board of one deploy run gets (built once on the host)."""

    build_dir: Path
    lib_dir: Path  # BUILD/fw/lib -> copied to /lib
    scripts: list[tuple[Path, str]]  # (local, device) main.py / boot.py, as source
    certs_dir: Path  # BUILD/certs -> copied to /certs
    certs: list[DerCert]
    board: Path
    settings: Path | None
    node_json: Path  # board.json + settings.json checked and compiled here: the board reads this
    flags: tuple[str, ...] = ()
    lib_files: list[tuple[Path, str]] = field(default_factory=list)  # (local .mpy, device path)

    def shared_files(self) -> list[tuple[Path, str]]:
        files = list(self.lib_files) + list(self.scripts)
        files.append((self.board, layout.BOARD_JSON))
        if self.settings is not None:
            files.append((self.settings, layout.SETTINGS))
        files.append((self.node_json, layout.NODE_JSON))
        files += [(self.certs_dir / c.name, layout.cert_device_path(c.name)) for c in self.certs]
        return files

    def owned_dirs(self) -> list[tuple[str, tuple[str, ...]]]:
        """Device directories deploy owns, with the file names that belong there (others are stale)."""
        dirs: dict[str, list[str]] = {}
        for _, device in self.lib_files:
            parent = str(PurePosixPath(device).parent)
            if parent != layout.LIB_DIR:  # /lib itself may hold the user's other libraries
                dirs.setdefault(parent, []).append(PurePosixPath(device).name)
        dirs[layout.CERTS_DIR] = [c.name for c in self.certs]
        return [(d, tuple(sorted(names))) for d, names in sorted(dirs.items())]


def compile_firmware(firmware: Path, out: Path, flags: tuple[str, ...]) -> list[tuple[Path, str]]:
    """Compile firmware/ into out/lib (.mpy) and copy its scripts to out/; returns [(local, device)].

    Each .mpy embeds the name the board imports it by (mpy-cross -s; build.module_name), so tracebacks
    read `mcagent.http`, the name costs no heap of its own, and the bytes do not depend on where the
    checkout lives (a deploy from another clone copies nothing).
    Files newer than their source are kept (make-style), unless the flags or mpy-cross changed.
    """
    stamp = out / ".build-stamp"
    wanted_stamp = json.dumps(
        {"flags": list(flags), "opt": OPTIMISE, "mpy_cross": mpy_cross_path(), "names": "module"}
    )
    if out.exists() and (not stamp.exists() or stamp.read_text() != wanted_stamp):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[Path, Path, str]] = []
    files: list[tuple[Path, str]] = []
    for source in board_sources(firmware):
        rel = PurePosixPath(source.relative_to(firmware).as_posix())
        device = layout.device_path_for_source(rel)
        local = out / str(device).lstrip("/")
        files.append((local, str(device)))
        if not local.exists() or local.stat().st_mtime_ns < source.stat().st_mtime_ns:
            lib = device.is_relative_to(layout.LIB_DIR)
            name = module_name(device.relative_to(layout.LIB_DIR)) if lib else str(rel)
            jobs.append((source, local, name))
        if rel == PurePosixPath("main.py"):  # the runtime went to /lib: /main.py imports it
            stub = out / layout.MAIN.lstrip("/")
            if not stub.exists() or stub.read_text() != layout.MAIN_STUB:
                stub.write_text(layout.MAIN_STUB)
            files.append((stub, layout.MAIN))

    def make(job: tuple[Path, Path, str]) -> str | None:
        source, local, rel = job
        tmp = local.with_name(local.name + ".tmp")
        if local.suffix == ".mpy":
            error = compile_file(source, tmp, flags, rel)
            if error:
                return f"{error.source}: {error.message}"
        else:
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp)
        tmp.replace(local)
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        errors = [e for e in pool.map(make, jobs) if e]
    if errors:
        raise DeployError("mpy-cross failed; the firmware does not compile:\n  " + "\n  ".join(errors))
    if not files:
        raise DeployError(f"no firmware sources under {firmware}")
    keep = {local for local, _ in files}
    for path in sorted(out.rglob("*"), reverse=True):  # sources removed since the last build
        if path.is_file() and path != stamp and path not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    stamp.write_text(wanted_stamp)
    return files


def settings_ca_warnings(settings: dict[str, object] | None, certs: list[DerCert]) -> list[str]:
    """settings.json "ca" should name the certificates deploy installs (paths from the flash root)."""
    if settings is None:
        return []
    installed = [layout.cert_device_path(c.name) for c in certs]
    suggestion = json.dumps([p.lstrip("/") for p in installed])
    ca = settings.get("ca")
    if ca is None:  # the agent then trusts every certificate deploy installs in /certs: nothing to warn about
        return []
    names = [ca] if isinstance(ca, str) else ca if isinstance(ca, list) else []
    missing = [str(n) for n in names if "/" + str(n).lstrip("/") not in installed]
    if missing:
        return [
            f'settings.json "ca" names {", ".join(missing)}, which deploy does not install '
            f'(it installs {", ".join(installed)}); e.g. "ca": {suggestion}'
        ]
    return []


def build_bundle(
    *,
    firmware: Path,
    build_dir: Path,
    board: Path,
    settings: Path | None,
    ca_files: list[Path],
    insights_hub_ca: bool,
    flags: tuple[str, ...] = (),
) -> Bundle:
    settings_doc = read_json_object(settings, "settings") if settings is not None else None
    try:  # the firmware's own checks, here rather than at boot on the board
        compiled_node = host_firmware.node_json(board, settings)
    except ValueError as e:
        raise DeployError(str(e)) from None
    try:
        certs = der_certs(ca_files, insights_hub=insights_hub_ca)
    except CertError as e:
        raise DeployError(str(e)) from None
    if not certs:
        raise DeployError("no CA certificate to install: the agent could not verify any server")
    fw_dir = build_dir / "fw"
    compiled = compile_firmware(firmware, fw_dir, flags)
    lib_dir = fw_dir / layout.LIB_DIR.lstrip("/")
    scripts = [(p, d) for p, d in compiled if not d.startswith(layout.LIB_DIR + "/")]
    lib_files = [(p, d) for p, d in compiled if d.startswith(layout.LIB_DIR + "/")]
    if not any(d == layout.MAIN for _, d in scripts):  # no firmware/main.py
        print(
            f"mcagent deploy: note: {firmware}/main.py is missing; "
            "the board will not start the agent by itself",
            file=sys.stderr,
        )
    if settings is None:
        print(
            "mcagent deploy: note: no --settings: the board keeps the settings.json it has (if any)",
            file=sys.stderr,
        )
    for warning in settings_ca_warnings(settings_doc, certs):
        print(f"mcagent deploy: warning: {warning}", file=sys.stderr)
    certs_dir = build_dir / layout.CERTS_DIR.lstrip("/")
    write_der_dir(certs, certs_dir)
    node_json = build_dir / "node.json"
    # It carries the Wi-Fi key from settings.json: owner-only from the moment it exists.
    fd = os.open(node_json, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(compiled_node))
    node_json.chmod(0o600)  # a file left by an older deploy keeps its mode through O_TRUNC
    return Bundle(build_dir, lib_dir, scripts, certs_dir, certs, board, settings, node_json, flags, lib_files)


# plan ---------------------------------------------------------------------------------------------------
def _q(text: str) -> str:
    """A MicroPython string literal in double quotes (printed commands stay inside shell single quotes)."""
    return json.dumps(text)


def probe_code(cross: tuple[int, int]) -> str:
    """One line for the board: print what it is (JSON after PROBE_TAG), then fail if it can't match."""
    return (
        'import sys,os,json;i=sys.implementation;v=os.statvfs("/");'
        f'print("{PROBE_TAG}",json.dumps({{"mpy":getattr(i,"_mpy",0),"version":list(i.version[:3]),'
        '"platform":sys.platform,"machine":getattr(i,"_machine",""),"fs_free":v[0]*v[4],"fs_size":v[0]*v[2],'
        '"fs_block":v[0],'
        '"dirs":[e[0] for e in os.ilistdir("/") if e[1]==0x4000],'
        '"files":[e[0] for e in os.ilistdir("/") if e[1]==0x8000]}));' + guard_code(cross)
    )


def cleanup_code(owned: list[tuple[str, tuple[str, ...]]]) -> str:
    """One line for the board: delete files in deploy's own directories that this deploy did not bring.

    A stale `x.py` would even shadow the new `x.mpy` (MicroPython imports .py first).
    """
    pairs = ",".join(f"({_q(d)},({''.join(_q(n) + ',' for n in names)}))" for d, names in owned)
    return (
        'import os;[print("removed",d+"/"+e[0]) or os.remove(d+"/"+e[0]) '
        f"for d,k in ({pairs},) for e in os.ilistdir(d) if e[1]==0x8000 and e[0] not in k]"
    )


@dataclass
class Node:
    port: str
    config: Path
    agent_id: str


@dataclass
class Plan:
    node: Node
    probe: list[str]
    install: list[str]
    reset: list[str] | None
    files: list[tuple[Path, str]]  # everything install copies: (local, device path)

    def commands(self) -> list[list[str]]:
        return [self.probe, self.install] + ([self.reset] if self.reset else [])


def footprint(bundle: Bundle) -> str:
    """What a deploy copies, and the heap budget the board's definition declares (make fit checks it)."""
    files = bundle.shared_files()
    total = sum(local.stat().st_size for local, _ in files)
    code = sum(local.stat().st_size for local, _ in bundle.lib_files)
    try:
        heap_kb = json.loads(bundle.board.read_text()).get("heap_kb")
    except (OSError, ValueError):
        heap_kb = None
    budget = f"{heap_kb} KB of GC heap (heap_kb)" if heap_kb else "not declared (heap_kb)"
    return (
        f"copies {len(files)} files, {total:,} bytes, of which {code:,} bytes of .mpy bytecode (a board "
        f"without frozen firmware holds what a wake imports in its heap); the board's budget: {budget}, "
        f"`make fit` checks a first and a later wake against it"
    )


def plan(bundle: Bundle, node: Node, cross: tuple[int, int], reset: bool = True) -> Plan:
    mpremote = tool_path("mpremote")
    base = [mpremote, "connect", node.port, "resume"]
    install = [*base, "exec", 'import os;os.chdir("/")']
    install += ["+", "fs", "cp", "-r", str(bundle.lib_dir), ":"]
    for local, device in bundle.scripts:
        install += ["+", "fs", "cp", str(local), ":" + device]
    install += ["+", "fs", "cp", str(bundle.board), ":" + layout.BOARD_JSON]
    install += ["+", "fs", "cp", str(node.config.resolve()), ":" + layout.AGENTCONFIG]
    if bundle.settings is not None:
        install += ["+", "fs", "cp", str(bundle.settings.resolve()), ":" + layout.SETTINGS]
    install += ["+", "fs", "cp", str(bundle.node_json.resolve()), ":" + layout.NODE_JSON]
    install += ["+", "fs", "cp", "-r", str(bundle.certs_dir), ":"]
    install += ["+", "exec", cleanup_code(bundle.owned_dirs())]
    files = bundle.shared_files() + [(node.config.resolve(), layout.AGENTCONFIG)]
    files.sort(key=lambda f: f[1])
    install += ["+", "fs", "sha256sum", *[":" + device for _, device in files]]
    return Plan(
        node,
        probe=[*base, "exec", probe_code(cross)],
        install=install,
        reset=[*base, "reset"] if reset else None,
        files=files,
    )


# run ----------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    node: Node
    ok: bool = False
    copied: int = 0
    unchanged: int = 0
    removed: int = 0
    error: str = ""
    device: str = ""
    reset: str = ""


def shared_asset_problem(bundle: Bundle, boards: int) -> str | None:
    """Why one board.json cannot serve several boards, or None: its points map onto properties of one asset
    (dsc.entityId), and a property takes one data point, so every board after the first would have its
    mappings refused (409) and nothing it sends would reach the asset."""
    try:
        desc = json.loads(bundle.node_json.read_text())["dsc"]
        mappings = host_firmware.module("mcagent.dsc").build(desc)[1]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not mappings:
        return None
    assets = sorted({m[1] for m in mappings})
    return (
        f"{bundle.board} maps its data points onto asset {', '.join(assets)}, and an asset property "
        f"takes the data of one agent only: {boards} boards cannot all feed it. Give each board its own "
        "board.json with its own dsc.entityId (one deploy per board), or leave the points' `property` out"
    )


STORE_RESERVE_BLOCKS = 40  # beside the store: the node's and the agent's state, run log, atomic copies, the
# store's spare segments and quarantine (the unix board's first wake used 26 blocks besides its store)


def store_room_problem(bundle: Bundle, fs_size: object, fs_block: object) -> str | None:
    """Why the store's capacity cannot fit the board's filesystem beside what deploy copies, or None.

    The store never takes more than the filesystem holds (it clamps its capacity when it opens), so a
    capacity past the flash's room is quietly a smaller buffer than board.json says, and the flash runs
    full. On littlefs each file takes whole blocks, each directory two, the superblock two."""
    if not isinstance(fs_size, int) or not isinstance(fs_block, int) or fs_size <= 0 or fs_block <= 0:
        return None
    try:
        capacity = int(json.loads(bundle.node_json.read_text())["store"]["capacity_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    copied = bundle.shared_files()
    files = sum(-(-local.stat().st_size // fs_block) * fs_block for local, _ in copied)
    files += fs_block  # agentconfig.json
    dirs = {str(PurePosixPath(device).parent) for _, device in copied} - {"/", "."}
    files += (2 + 2 * len(dirs)) * fs_block
    reserve = STORE_RESERVE_BLOCKS * fs_block
    room = fs_size - files - reserve
    if capacity <= room:
        return None
    most = max(0, room // 1024)
    return (
        f"the store's capacity ({capacity // 1024} KiB, store.capacity_kb in board.json) does not fit this "
        f"board's filesystem of {fs_size // 1024} KiB beside the {files // 1024} KiB deploy copies and "
        f"{reserve // 1024} KiB for the node's own files: set store.capacity_kb to at most {most}"
    )


def parse_probe(output: str) -> dict[str, object] | None:
    for line in output.splitlines():
        if line.startswith(PROBE_TAG + " "):
            try:
                doc = json.loads(line[len(PROBE_TAG) + 1 :])
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None


def parse_hashes(output: str) -> dict[str, str]:
    """`sha256sum :PATH` lines of mpremote, each followed by the hex digest -> {device path: hex}."""
    hashes: dict[str, str] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("sha256sum :"):
            digest = lines[i + 1].strip()
            if re.fullmatch(r"[0-9a-f]{64}", digest):
                hashes[line[len("sha256sum :") :].strip()] = digest
    return hashes


def _why(result: Result) -> str:
    """The last line a failed tool printed: usually the reason."""
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Deployer:
    """Runs plans against boards, printing one line per step (never a file's content)."""

    def __init__(
        self, bundle: Bundle, firmware: Path, verbose: bool = False, timeout_s: float = 180.0
    ) -> None:
        self.bundle = bundle
        self.firmware = firmware
        self.verbose = verbose
        self.timeout_s = timeout_s
        self._platform = ""
        self._machine = ""

    def match_build(self, target: MpyTarget) -> None:
        """Recompile for the board's architecture if the bundle was built for another (same file paths)."""
        flags = cross_flags(target, native=uses_native_code(board_sources(self.firmware)))
        flags += tuple(f for f in self.bundle.flags if f.startswith("-O"))  # --line-numbers stays
        if flags != self.bundle.flags:
            compile_firmware(self.firmware, self.bundle.lib_dir.parent, flags)
            self.bundle.flags = flags

    def say(self, port: str, text: str) -> None:
        print(f"{port}: {text}", flush=True)

    def run_step(self, argv: list[str], timeout_s: float) -> Result:
        if self.verbose:
            print(f"$ {shell_line(argv)}", flush=True)
        return run_tool(argv, timeout_s=timeout_s)

    def probe(self, p: Plan, cross: tuple[int, int]) -> MpyTarget:
        port = p.node.port
        result = self.run_step(p.probe, timeout_s=min(self.timeout_s, 60))
        info = parse_probe(result.output)
        if info is None:
            raise DeployError(
                f"no answer from a MicroPython REPL on {port} ({_why(result)})\n{result.tail()}"
            )
        raw_version, mpy = info.get("version"), info.get("mpy")
        version = tuple(x for x in raw_version if isinstance(x, int)) if isinstance(raw_version, list) else ()
        try:
            target = check_compatible(mpy if isinstance(mpy, int) else None, version, cross)
        except IncompatibleDevice as e:
            raise DeployError(f"refusing to deploy: {e}") from None
        if not result.ok:
            raise DeployError(f"probing the board failed ({_why(result)})\n{result.tail()}")
        p_info = f"MicroPython {'.'.join(map(str, version))} on {info.get('platform')}, {target}"
        free = info.get("fs_free")
        if isinstance(free, int):
            p_info += f", {free // 1024} KiB flash free"
        self.say(port, p_info)
        problem = store_room_problem(self.bundle, info.get("fs_size"), info.get("fs_block"))
        if problem:
            raise DeployError(f"refusing to deploy: {problem}")
        self._platform = str(info.get("platform"))
        self._machine = str(info.get("machine"))
        dirs = info.get("dirs")
        packages = {p.name for p in self.bundle.lib_dir.iterdir() if p.is_dir()}
        for shadow in sorted(packages & set(dirs if isinstance(dirs, list) else [])):
            self.say(
                port,
                f"WARNING: the directory /{shadow} on the board shadows the package "
                f"{layout.LIB_DIR}/{shadow} (sys.path searches the flash root before /lib): "
                f"`import {shadow}` will fail; "
                "remove or rename it",
            )
        files = info.get("files")
        if isinstance(files, list) and layout.STOP_FILE.lstrip("/") in files:
            self.say(
                port,
                f"note: {layout.STOP_FILE} is on the board, so the agent will stay at the REPL after a reset "
                f"(remove it to let it run: mpremote connect {port} fs rm :{layout.STOP_FILE})",
            )
        return target

    def install(self, p: Plan, outcome: Outcome) -> None:
        port = p.node.port
        result = self.run_step(p.install, timeout_s=self.timeout_s)
        if not result.ok:
            raise DeployError(f"copying failed ({_why(result)})\n{result.tail()}")
        outcome.unchanged = sum(1 for line in result.output.splitlines() if line.startswith("Up to date: "))
        outcome.copied = len(p.files) - outcome.unchanged
        outcome.removed = sum(1 for line in result.output.splitlines() if line.startswith("removed "))
        hashes = parse_hashes(result.output)
        bad = [device for local, device in p.files if hashes.get(device) != _sha256(local)]
        if bad:
            raise DeployError(f"verification failed (SHA-256 differs or missing) for: {', '.join(bad)}")
        self.say(
            port,
            f"{len(p.files)} files: {outcome.copied} copied, {outcome.unchanged} unchanged, "
            f"{outcome.removed} stale removed; all verified (SHA-256)",
        )

    def deploy(self, p: Plan, cross: tuple[int, int], board_chip: str | None) -> Outcome:
        outcome = Outcome(p.node)
        port = p.node.port
        try:
            target = self.probe(p, cross)
            outcome.device = str(target)
            self.match_build(target)
            mismatch = chip_mismatch(board_chip, self._platform, self._machine)
            if mismatch:
                raise DeployError(f"refusing to deploy: {mismatch}")
            self.say(port, f"agent {p.node.agent_id} ({p.node.config.name})")
            self.install(p, outcome)
            if p.reset is None:
                outcome.reset = "not reset (--no-reset)"
            else:
                result = self.run_step(p.reset, timeout_s=30)
                if not result.ok:
                    raise DeployError(
                        f"installed, but the reset failed ({_why(result)}): press the reset button\n"
                        + result.tail()
                    )
                outcome.reset = "reset: the board starts the agent now"
                if self._platform == "linux":
                    start = [
                        p.reset[0],
                        "connect",
                        port,
                        "resume",
                        "exec",
                        "--no-follow",
                        layout.VBOARD_START,
                    ]
                    outcome.reset = (
                        "reset: the virtual board restarted and starts the agent (one started with "
                        f"--no-run-main stays at the REPL: {shell_line(start)} starts it)"
                    )
            self.say(port, outcome.reset)
            outcome.ok = True
        except (DeployError, ToolError) as e:
            outcome.error = str(e)
            print(f"{port}: FAILED: {e}", file=sys.stderr, flush=True)
        return outcome


# command line -------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        action="append",
        required=True,
        help="serial port of a board (repeat with --config-dir for many boards)",
    )
    p.add_argument(
        "--board",
        required=True,
        help="a board of boards/ by name (boards/NAME/board.json), or the path of your own board.json",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", type=Path, help="the agent's agentconfig.json (boarding configuration)")
    group.add_argument(
        "--config-dir",
        type=Path,
        help="a directory of agentconfig *.json files, paired in name order with the --port list",
    )
    p.add_argument("--settings", type=Path, help="settings.json for the board (Wi-Fi network and key, ...)")
    p.add_argument(
        "--ca",
        type=Path,
        action="append",
        default=[],
        help="another CA certificate to trust, PEM or DER (e.g. southgate's ca.pem for local work)",
    )
    p.add_argument(
        "--no-insights-hub-ca",
        action="store_true",
        help="don't install DigiCert Global Root G2 (only for boards that talk to a local southgate)",
    )
    p.add_argument("--no-reset", action="store_true", help="don't reset the board after installing")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the mpremote commands (builds the local files they copy; touches no board)",
    )
    p.add_argument("--arch", help="mpy-cross -march for --dry-run (a real deploy asks the board)")
    p.add_argument(
        "--line-numbers",
        action="store_true",
        help="keep line numbers in tracebacks (~2 KB more heap per wake; for boards with heap to spare)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print each mpremote command as it runs")
    p.add_argument(
        "--report", type=Path, help="write a JSON list of {port, agent_id, config, ok, error} here"
    )
    p.add_argument("--timeout", type=float, default=180.0, help="seconds allowed for each mpremote command")
    p.add_argument("--firmware-dir", type=Path, default=FIRMWARE, help=argparse.SUPPRESS)
    p.add_argument("--boards-dir", type=Path, default=BOARDS, help=argparse.SUPPRESS)
    p.add_argument(
        "--build-dir", type=Path, default=BUILD, help="where the compiled files go (default build/deploy)"
    )


def nodes_from_args(args: argparse.Namespace) -> list[Node]:
    ports: list[str] = args.port
    if len(set(ports)) != len(ports):
        raise DeployError("a --port is given twice")
    if args.config is not None:
        if len(ports) != 1:
            raise DeployError(
                "one --config is one agent: for many boards give --config-dir with one file per board"
            )
        return [Node(ports[0], args.config, agent_id(args.config))]
    configs = sorted(args.config_dir.glob("*.json"))
    if len(configs) != len(ports):
        raise DeployError(
            f"{args.config_dir} has {len(configs)} agentconfig files but {len(ports)} ports were given: "
            "each board needs its own agent"
        )
    nodes = []
    problems = []
    for port, config in zip(ports, configs, strict=True):
        try:
            nodes.append(Node(port, config, agent_id(config)))
        except DeployError as e:
            problems.append(str(e))
    if problems:
        raise DeployError("\n".join(problems))
    ids = [n.agent_id for n in nodes]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DeployError(f"the same agent is in more than one file: {', '.join(dupes)}")
    return nodes


def run(args: argparse.Namespace) -> int:
    try:
        if args.report and not args.report.resolve().parent.is_dir():  # known before any board is touched
            raise DeployError(f"--report {args.report}: the directory {args.report.parent} does not exist")
        nodes = nodes_from_args(args)
        if not args.dry_run and len(nodes) == 1:  # before the build: a mistyped or unplugged port fails
            # at once, plainly (with many boards, one missing port must not stop the others: it fails alone)
            missing = [problem for node in nodes if (problem := port_problem(node.port))]
            if missing:
                raise DeployError("\n".join(missing))
        board = board_json(args.board, args.boards_dir)
        board_chip = read_json_object(board, "board description").get("chip")
        cross = cross_version()
        native = uses_native_code(board_sources(args.firmware_dir))
        flags = cross_flags(MpyTarget(cross[0], cross[1], args.arch), native) if args.arch else ()
        if args.line_numbers:
            flags += (LINE_NUMBERS,)
        bundle = build_bundle(
            firmware=args.firmware_dir,
            build_dir=args.build_dir.resolve(),
            board=board.resolve(),
            settings=args.settings,
            ca_files=args.ca,
            insights_hub_ca=not args.no_insights_hub_ca,
            flags=flags,
        )
        if len(nodes) > 1:
            problem = shared_asset_problem(bundle, len(nodes))
            if problem:
                raise DeployError(f"refusing to deploy: {problem}")
        plans = [plan(bundle, node, cross, reset=not args.no_reset) for node in nodes]
    except (DeployError, ToolError, IncompatibleDevice) as e:
        print(f"mcagent deploy: {e}", file=sys.stderr)
        return 2

    many = len(plans) > 1
    if args.dry_run:
        print(f"mcagent deploy: {footprint(bundle)}", file=sys.stderr)
        for p in plans:
            if many:
                print(f"# {p.node.port} <- agent {p.node.agent_id} ({p.node.config})")
            for argv in p.commands():
                print(shell_line(argv))
        return 0

    deployer = Deployer(bundle, args.firmware_dir, verbose=args.verbose, timeout_s=args.timeout)
    outcomes = []
    for p in plans:
        outcomes.append(deployer.deploy(p, cross, board_chip if isinstance(board_chip, str) else None))
    if args.report:
        args.report.write_text(
            json.dumps(
                [
                    {
                        "port": o.node.port,
                        "agent_id": o.node.agent_id,
                        "config": str(o.node.config),
                        "ok": o.ok,
                        "copied": o.copied,
                        "unchanged": o.unchanged,
                        "error": o.error,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
            + "\n"
        )
    failed = [o for o in outcomes if not o.ok]
    if many or failed:
        print("summary:")
        for o in outcomes:
            state = "ok" if o.ok else "FAILED: " + o.error.splitlines()[0]
            print(f"  {o.node.port} <- agent {o.node.agent_id} ({o.node.config.name}): {state}")
        print(f"{len(outcomes) - len(failed)} of {len(outcomes)} boards deployed")
    return 1 if failed else 0
