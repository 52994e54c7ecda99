# A NOR flash model for littlefs (os.VfsLfs2) on the MicroPython Unix port, with power cuts on demand.
#
# NOR rules: erase sets a whole block to 0xFF; programming can only clear bits (new = old AND data).
# Every program and erase is an "op"; FlashSim(cut_at=N) performs op N only partly ("half": the first half
# of the bytes programmed / of the block erased; "none": not at all), then raises PowerCut (the CPU stops
# in the middle of littlefs). From then on the device is dead: every read, program or erase fails with an
# I/O error code and changes nothing, so code unwinding after the cut (with-blocks closing files) can neither
# change the image nor appear to succeed, and file objects get closed instead of lingering for finalisers.
# `on_cut` (optional) is called at the cut, before the exception: tests snapshot "what had returned" there.
# `revive()` returns a live device over the same bytes, i.e. the board after power comes back.
# Works on CPython too (no mount there: os.VfsLfs2 is MicroPython's).

import os

_EIO = -5  # LFS_ERR_IO


class PowerCut(BaseException):
    """Raised at the cut op. A BaseException: `except Exception` in the code under test lets it pass."""


class FlashSim:
    def __init__(self, blocks=48, block_size=4096, data=None, hw=None, cut_at=None, cut_mode="half"):
        self.block_size = block_size
        self.blocks = blocks
        self.data = data if data is not None else bytearray(b"\xff" * (blocks * block_size))
        # Per block: offset below which bytes may have been programmed since the last erase. littlefs
        # programs each block front to back, so above it a program is a plain copy (fast); below it the
        # AND rule is applied byte by byte.
        self.hw = hw if hw is not None else bytearray(4 * blocks)
        self.mv = memoryview(self.data)
        self.cut_at = cut_at
        self.cut_mode = cut_mode
        self.ops = 0
        self.progs = 0
        self.erases = 0
        self.dead = False
        self.program_over = 0  # programs that landed on not-erased bytes (should stay 0 with littlefs)
        self.on_cut = None

    def _hw(self, block):
        i = 4 * block
        h = self.hw
        return h[i] | (h[i + 1] << 8) | (h[i + 2] << 16) | (h[i + 3] << 24)

    def _set_hw(self, block, v):
        i = 4 * block
        h = self.hw
        h[i] = v & 0xFF
        h[i + 1] = (v >> 8) & 0xFF
        h[i + 2] = (v >> 16) & 0xFF
        h[i + 3] = (v >> 24) & 0xFF

    def _op(self):
        """Count an op; True if it is the op to cut (done partly by the caller, then PowerCut)."""
        self.ops += 1
        return self.cut_at is not None and self.ops == self.cut_at

    def _cut(self, what):
        self.dead = True
        if self.on_cut is not None:
            self.on_cut()
        raise PowerCut(f"power cut at op {self.ops} ({what})")

    def readblocks(self, block, buf, off=0):
        if self.dead:
            return _EIO
        a = block * self.block_size + off
        buf[:] = self.mv[a : a + len(buf)]

    def writeblocks(self, block, buf, off=None):
        if off is None:
            off = 0
        if self.dead:
            return _EIO
        cut = self._op()
        self.progs += 1
        n = len(buf)
        if cut:
            n = n // 2 if self.cut_mode == "half" else 0
        a = block * self.block_size + off
        if off >= self._hw(block):
            self.mv[a : a + n] = memoryview(buf)[:n]
        else:
            self.program_over += 1
            d = self.data
            for i in range(n):
                d[a + i] &= buf[i]
        if off + n > self._hw(block):
            self._set_hw(block, off + n)
        if cut:
            self._cut(f"program block {block}")
        return 0

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        if op == 6:
            if self.dead:
                return _EIO
            cut = self._op()
            self.erases += 1
            bs = self.block_size
            a = arg * bs
            n = bs if not cut else (bs // 2 if self.cut_mode == "half" else 0)
            self.mv[a : a + n] = b"\xff" * n
            if not cut:
                self._set_hw(arg, 0)
            else:
                self._cut(f"erase block {arg}")
            return 0
        return 0

    def revive(self, cut_at=None, cut_mode="half"):
        """A live device over the same bytes (power back on); optionally armed for the next cut."""
        return FlashSim(self.blocks, self.block_size, self.data, self.hw, cut_at, cut_mode)

    def snapshot(self):
        """An independent copy of the image (e.g. a freshly formatted one to start each sweep run from)."""
        return FlashSim(self.blocks, self.block_size, bytearray(self.data), bytearray(self.hw))


def mount(dev, mountpoint="/flash", mkfs=False):
    """Mount dev with littlefs v2 at mountpoint (MicroPython only). mtime off: same ops every run."""
    if mkfs:
        os.VfsLfs2.mkfs(dev)
    vfs = os.VfsLfs2(dev, mtime=False)
    os.mount(vfs, mountpoint)
    return vfs


def umount(mountpoint="/flash"):
    try:
        os.umount(mountpoint)
    except OSError:
        pass
