"""CPython's side of mcagent.compat: what differs on the host (tests, tools), apart from the module a board
loads. A board never imports this, so its code and names cost a board's heap nothing; compat imports it on
CPython and replaces its own versions of these names with them. (It imports nothing of compat: what it
needs from there comes as an argument.)
"""

import os
import select
import ssl
import sys

# CPython raises ssl.SSLError (an OSError) for a failed handshake, SSLCertVerificationError when the peer is
# not who it claims to be.
TLS_VERIFY_ERRORS = (ssl.SSLCertVerificationError,)


def digits(s):
    """One or more ASCII digits: CPython's str.isdigit also takes "\u00b2" or Arabic-Indic digits, which a
    number in a server's header must not be."""
    return s.isascii() and s.isdigit()


def tls_client_context(ca_ders):
    """compat.tls_client_context on CPython: verification (and the host-name check) always on."""
    if not ca_ders:
        raise ValueError("TLS needs at least one CA certificate (DER)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    for der in ca_ders:
        ctx.load_verify_locations(cadata=der)
    return ctx


def make_private(path):
    """Restrict a file holding secrets to its owner."""
    os.chmod(path, 0o600)


def print_exception(exc, file=sys.stderr):
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=file)


class SockIO:
    """compat.SockIO on CPython: blocking calls with settimeout, each cut to what is left before the request's
    deadline (time_left and is_timeout: compat's)."""

    def __init__(self, sock, timeout_ms, time_left, is_timeout):
        self.sock = sock
        self.timeout_ms = timeout_ms
        self.deadline = None
        self._time_left = time_left
        self._is_timeout = is_timeout
        sock.settimeout(timeout_ms / 1000)

    def _budget(self):
        return self._time_left(self.deadline, self.timeout_ms)

    def _call(self, op, mv):
        budget = self._budget()
        self.sock.settimeout(budget / 1000)
        try:
            return op(mv)
        except OSError as e:
            if self._is_timeout(e) and budget < self.timeout_ms:
                self._budget()  # the wait was cut to the deadline, which has now passed: say so
            raise

    def recv_into(self, mv):
        return self._call(self.sock.recv_into, mv)

    def send(self, mv):
        self._call(self.sock.sendall, mv)

    def idle_ok(self):
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending():
            return False
        if not select.select([self.sock], [], [], 0)[0]:
            return True
        self.sock.setblocking(False)
        try:
            self.sock.recv(1)
            return False  # data or EOF
        except OSError as e:
            return isinstance(e, (BlockingIOError, ssl.SSLWantReadError))
        finally:
            self.sock.settimeout(self.timeout_ms / 1000)
