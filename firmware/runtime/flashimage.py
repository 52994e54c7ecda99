"""The unix board's flash: a littlefs image file on a file-backed block device (4 KiB blocks, erased = 0xFF
as on an ESP32), mounted with os.VfsLfs2. Loaded only on the Unix port.
"""

from micropython import const

_BLOCK_SIZE = const(4096)
_ERASED = b"\xff" * 256


class FileBlockDevice:
    """A block device over an image file (4 KiB blocks), for os.VfsLfs2 on the Unix port.

    Erased flash reads 0xFF, like the ESP32's; littlefs programs only erased space, so writing bytes
    through is the same as NOR's AND here.
    """

    def __init__(self, path, blocks, block_size=_BLOCK_SIZE):
        self.block_size = block_size
        self.blocks = blocks
        self.created = False
        self.root = None  # where mount_image mounted it
        try:
            self.f = open(path, "r+b")
            self.blocks = self.f.seek(0, 2) // block_size or blocks  # an image keeps the size it was made
        except OSError:
            f = open(path, "wb")
            for _ in range(blocks * block_size // len(_ERASED)):
                f.write(_ERASED)
            f.close()
            self.f = open(path, "r+b")
            self.created = True

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * self.block_size + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:  # a whole-block write: erase first (littlefs v2 always passes an offset)
            offset = 0
        self.f.seek(block * self.block_size + offset)
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase: write 0xFF through one small buffer (no 4 KiB allocation per erase)
            self.f.seek(arg * self.block_size)
            for _ in range(self.block_size // len(_ERASED)):
                self.f.write(_ERASED)
            return 0
        return 0

    def close(self):
        """Unmount the filesystem on it (mount_image), if any, and close the image."""
        if self.root is not None:
            import os

            os.umount(self.root)
            self.root = None
        self.f.close()


def mount_image(path, root="/flash", blocks=512):
    """Mount (formatting a new image first) a littlefs image file; returns the block device.

    An existing image that does not mount is refused, like a board that prints "filesystem appears to be
    corrupted", instead of being formatted over: the readings on it may still be recoverable.
    """
    import os

    vfs_type = getattr(os, "VfsLfs2", None)
    if vfs_type is None:
        raise OSError("this interpreter has no os.VfsLfs2 (run the unix board under micropython)")
    dev = FileBlockDevice(path, blocks)
    if dev.created:
        vfs_type.mkfs(dev)
    try:
        vfs = vfs_type(dev)
    except OSError as e:
        dev.close()
        raise OSError("flash image %s does not mount as littlefs (%r): remove it to start afresh" % (path, e))
    os.mount(vfs, root)
    dev.root = root
    return dev
