"""The one place that knows MicroPython from CPython, a 2000 epoch from 1970, `tls` from `ssl`.

Every other firmware module imports platform-dependent things from here, so a port difference is fixed in
one place and can be faked in one place by tests. Where CPython needs code of its own (sockets with
settimeout, ssl's host-name check, chmod, traceback), that code is in mcagent.hostcompat, which this module
imports on CPython only: a board loads none of it.
"""

import os
import sys
import time

from micropython import const

MICROPYTHON = sys.implementation.name == "micropython"
# MicroPython's Unix port (the unix board, run from a command line), not a microcontroller
UNIX_PORT = MICROPYTHON and sys.platform in ("linux", "darwin")

try:  # MicroPython >= 1.23 has the native module; CPython (and old firmware) only `ssl`.
    import tls
except ImportError:
    import ssl as tls

_PACK_BYTES = const(1024)  # pack_heap: allocation between collections (512 to 8192 measured: make fit)

# Seconds from 1970-01-01 to 2000-01-01: ESP32 and most bare-metal ports count time from 2000.
_Y2K_S = const(946684800)


def epoch_offset(time_module=time):
    """Seconds to add to the port's time() to get Unix time (0 on 1970-epoch ports)."""
    return _Y2K_S if time_module.gmtime(0)[0] == 2000 else 0


def port_time_ms(time_module=time):
    """Milliseconds since the port's own epoch, as an int (time() is a float on Unix, an int on boards)."""
    ns = getattr(time_module, "time_ns", None)
    if ns is not None:
        return ns() // 1000000
    return int(time_module.time() * 1000)


def utf8(text):
    """The UTF-8 bytes of a str as a buffer: the str itself on MicroPython (its storage is UTF-8 and it has
    the buffer protocol), so a 1 KB token is written or hashed without a copy; bytes on CPython."""
    return text if MICROPYTHON else text.encode()


def urandom(n):
    return os.urandom(n)


# Errors that mean "this TLS peer is not who it claims to be" or "the handshake failed": MicroPython raises
# ValueError for verification failures and OSError for I/O.
TLS_VERIFY_ERRORS = (ValueError,)


def tls_client_context(ca_ders):
    """A TLS client context that verifies the server against the given DER CA certificates.

    Verification is always on: there is deliberately no parameter to turn it off.
    """
    if not ca_ders:
        raise ValueError("TLS needs at least one CA certificate (DER)")
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    for der in ca_ders:
        ctx.load_verify_locations(der)  # positional only; called once per CA (they accumulate)
    return ctx


def tls_wrap(ctx, sock, host):
    """Handshake as a client for host (SNI and host-name check)."""
    return ctx.wrap_socket(sock, server_hostname=host)


def make_private(path):
    """Restrict a file holding secrets to its owner: nothing to do on a board (no permissions). MicroPython's
    Unix port has neither chmod nor umask: whoever starts it sets `umask 077` (mcagent vboard and make demo
    do), so the files it creates are owner-only from the start."""


def print_exception(exc, file=sys.stderr):
    sys.print_exception(exc, file)


def unload(name):
    """Forget a module (full dotted name) so the GC can reclaim its bytecode; a later import loads it again.

    Code deployed as .mpy lives in the heap on a board: modules a phase of a wake needs once (parsing,
    onboarding, Wi-Fi) are released with this when the phase is over. Its exception classes must live in
    a module that stays, so `except` clauses keep matching after a reload. A no-op on CPython, where heap
    is no concern and callers may hold the module (host tests, tools)."""
    if not MICROPYTHON or sys.modules.pop(name, None) is None:
        return  # not loaded: nothing to free (and no child name to intern by delattr)
    parent, _, child = name.rpartition(".")
    mod = sys.modules.get(parent) if parent else None
    if mod is not None:
        try:
            delattr(mod, child)
        except (AttributeError, KeyError, TypeError):  # MicroPython raises KeyError for a missing one
            pass


def load(module):
    """Import a module by its full dotted name and return it (the submodule, not the package): with unload,
    how code that only one phase of a wake needs comes and goes. The garbage goes first, so the code
    lands at the bottom of the heap, not above the garbage of the moment (see pack_heap)."""
    if MICROPYTHON:
        import gc

        gc.collect()
    return __import__(module, None, None, (module.rpartition(".")[2],))


def call_cold(module, fn, *args):
    """Import module (full dotted name), return its fn(*args), then unload it: code a phase needs once."""
    try:
        return getattr(load(module), fn)(*args)
    finally:
        unload(module)


def call_phase(module, fn, *args):
    """call_cold, and every module loaded during the call is unloaded after it as well: a phase of a
    wake whose whole code path ends with it (the upload wake: the agent's path goes once it flushed)."""
    before = list(sys.modules) if MICROPYTHON else ()
    try:
        return call_cold(module, fn, *args)
    finally:
        for name in list(sys.modules) if before else ():
            if name not in before:
                unload(name)


# --- socket I/O for mcagent.http (appended by the http area) ---


def is_timeout(exc):
    """True if an OSError from connect/read/write means "timed out" (CPython: TimeoutError; MicroPython:
    ETIMEDOUT, EAGAIN from SO_RCVTIMEO, or EINPROGRESS from a connect cut short by SO_SNDTIMEO)."""
    if not MICROPYTHON and isinstance(exc, TimeoutError):
        return True
    import errno

    code = getattr(exc, "errno", None)
    if code is None or isinstance(code, str):
        return False
    return code in (errno.ETIMEDOUT, errno.EAGAIN) or (MICROPYTHON and code == errno.EINPROGRESS)


class SockIO:
    """Reads and writes on a connected plain or TLS socket with one inactivity timeout, alike everywhere.

    recv_into(mv) returns what is available now (>= 1 byte) or 0 at EOF; send(mv) writes all of mv; both
    raise OSError(ETIMEDOUT) after timeout_ms without progress. Why not just settimeout(): MicroPython's
    readinto() on a blocking socket waits until the whole buffer is full (a short response would stall
    until the timeout) and some ports' TLS sockets have no recv_into. So the socket goes non-blocking and
    waits with select.poll (which also sees data mbedTLS already decrypted). Call blocking(sock, s) before
    handing the raw socket to tls_wrap. (CPython's, with blocking calls and settimeout: hostcompat.)
    """

    def __init__(self, sock, timeout_ms):
        import select

        self.sock = sock
        self.timeout_ms = timeout_ms
        self.deadline = None  # ticks_ms() by which the whole request must be done (http.Connection sets it)
        self._select = select
        sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def _budget(self):
        """ms this wait may take: the inactivity timeout, cut to what is left before the deadline."""
        return time_left(self.deadline, self.timeout_ms)

    def _wait(self, mask):
        self._poll.modify(self.sock, mask)
        for _ in self._poll.ipoll(self._budget()):
            return
        self._budget()  # the deadline passed while waiting: say so
        import errno

        raise OSError(errno.ETIMEDOUT)

    def recv_into(self, mv):
        self._budget()  # also when bytes keep coming (a drip, endless 1xx): the deadline holds
        while True:
            n = self.sock.readinto(mv)  # non-blocking: what is there, 0 at EOF, None if nothing yet
            if n is not None:
                return n
            self._wait(self._select.POLLIN)

    def send(self, mv):
        self._budget()
        n = len(mv)
        i = 0
        while i < n:
            k = self.sock.write(mv[i:] if i else mv)  # None: nothing taken (TLS: retry with the same bytes)
            if k is None:
                self._wait(self._select.POLLOUT)
            else:
                i += k

    def idle_ok(self):
        """False if the peer closed, reset or sent anything while the connection sat idle (then it must
        not carry another request). TLS housekeeping records alone (no application data) count as alive."""
        self._poll.modify(self.sock, self._select.POLLIN)
        for _ in self._poll.ipoll(0):
            break
        else:
            return True
        try:
            return self.sock.readinto(bytearray(1)) is None
        except OSError:
            return False


def time_left(deadline, ms):
    """ms a step may take: at most ms, cut to what is left before deadline (ticks_ms(), None: no deadline);
    OSError(ETIMEDOUT, "deadline") once it has passed (http.Connection tells that apart from a timeout)."""
    if deadline is None:
        return ms
    left = ticks_diff(deadline, ticks_ms())
    if left <= 0:
        import errno

        raise OSError(errno.ETIMEDOUT, "deadline")
    return min(ms, left)


def blocking(sock, timeout_s):
    """Put a socket (back) into blocking mode with a timeout: for connect() and the TLS handshake."""
    sock.settimeout(timeout_s)


# --- ticks and sleeping for the board runtime (appended by the boards area) ---


def ticks_ms(time_module=time):
    """A millisecond counter for measuring intervals (wraps on MicroPython; compare with ticks_diff)."""
    fn = getattr(time_module, "ticks_ms", None)
    if fn is not None:
        return fn()
    return int(time_module.monotonic() * 1000)


def ticks_add(a, ms, time_module=time):
    """The ticks_ms value ms after a (wraps like the counter: a deadline must be made with this)."""
    fn = getattr(time_module, "ticks_add", None)
    if fn is not None:
        return fn(a, ms)
    return a + ms


def ticks_diff(a, b, time_module=time):
    """a - b for two ticks_ms values, correct across the counter's wrap-around."""
    fn = getattr(time_module, "ticks_diff", None)
    if fn is not None:
        return fn(a, b)
    return a - b


def sleep_ms(ms, time_module=time):
    """Block for ms milliseconds (CPython's time has no sleep_ms)."""
    if ms <= 0:
        return
    fn = getattr(time_module, "sleep_ms", None)
    if fn is not None:
        fn(int(ms))
    else:
        time_module.sleep(ms / 1000)


def pack_heap():
    """Collect the garbage after every ~1 KB of allocation from now on (gc.threshold), unless the program
    set a threshold of its own. MicroPython allocates first-fit from the bottom of the heap and collects
    only when an allocation fails, so an object made to last (a module's code, the connection, the store,
    a token) lands wherever the garbage of the moment happens to end: a few of them spread over the heap
    split it into holes too small for the next module. Packed, they stay at the bottom (make fit, 32-bit:
    a first wake 116 -> 100 KB, the library API 92 -> 72 KB). A loop that makes only garbage, such as the
    uploader's batches, pauses it with gc_threshold(-1): each collection walks the whole heap."""
    if MICROPYTHON and gc_threshold(None) < 0:
        gc_threshold(_PACK_BYTES)


def gc_threshold(n):
    """Set gc.threshold (n >= 0: bytes between collections; -1: only when the heap is full; None: leave
    it) and return the previous value; None on CPython, where heap is no concern."""
    if not MICROPYTHON:
        return None
    import gc

    prev = gc.threshold()
    if n is not None:
        gc.threshold(n)
    return prev


def heap_free():
    """Collect the garbage and return the free GC heap bytes on MicroPython (the number the health event
    reports); None on CPython, where the figure means nothing for a board and a full collection is slow."""
    if not MICROPYTHON:
        return None
    import gc

    gc.collect()
    return gc.mem_free()


# --- filesystem helpers MicroPython's `os` lacks (os.path.exists, getsize, makedirs) and atomic writes ---


def file_size(path):
    """The size of a file in bytes, -1 if there is none (a directory is none: it cannot be streamed)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1
    return -1 if st[0] & 0x4000 else st[6]  # S_IFDIR


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def remove(path):
    """Delete a file if it is there: True if it was deleted."""
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def write_atomic(path, data=None, producer=None):
    """Replace path with data (bytes-like) or what producer(write) writes, so that a power cut leaves the
    old or the new content: path.tmp is written, flushed and closed (a littlefs commit), then renamed over
    path. A cut before the rename leaves path.tmp beside the old file (its reader drops or promotes it)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        if data is not None:
            f.write(data)
        if producer is not None:
            producer(f.write)
        f.flush()
    os.rename(tmp, path)


def makedirs(path, private=False):
    """Create path and any missing parents; private: owner-only where the platform has permissions."""
    path = path.rstrip("/")
    if not path or exists(path):
        return
    if "/" in path:
        makedirs(path.rsplit("/", 1)[0], private)
    try:
        if private and not MICROPYTHON:
            os.mkdir(path, 0o700)  # only its owner may enter (boards have no permissions)
        else:
            os.mkdir(path)
    except OSError:
        if not exists(path):
            raise


def enospc():
    """errno of "no space left on device": some ports' errno module lacks the name (28 everywhere here)."""
    import errno

    return getattr(errno, "ENOSPC", 28)


digits = str.isdigit  # digits(s): one or more ASCII digits (MicroPython's isdigit knows no others)

if not MICROPYTHON:  # CPython (host tests and tools): its own versions of what differs there
    from mcagent import hostcompat

    digits = hostcompat.digits

    TLS_VERIFY_ERRORS = hostcompat.TLS_VERIFY_ERRORS
    tls_client_context = hostcompat.tls_client_context
    make_private = hostcompat.make_private
    print_exception = hostcompat.print_exception

    def SockIO(sock, timeout_ms):  # noqa: F811
        return hostcompat.SockIO(sock, timeout_ms, time_left, is_timeout)
