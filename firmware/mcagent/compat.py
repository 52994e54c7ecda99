"""The one place that knows MicroPython from CPython, a 2000 epoch from 1970, `tls` from `ssl`.

Every other firmware module imports platform-dependent things from here, so a port difference is fixed in
one file and can be faked in one place by tests.
"""

import os
import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"

try:  # MicroPython >= 1.23 has the native module; CPython (and old firmware) only `ssl`.
    import tls
except ImportError:
    import ssl as tls

# Seconds from 1970-01-01 to 2000-01-01: ESP32 and most bare-metal ports count time from 2000.
Y2K_S = 946684800


def epoch_offset(time_module=time):
    """Seconds to add to the port's time() to get Unix time (0 on 1970-epoch ports)."""
    return Y2K_S if time_module.gmtime(0)[0] == 2000 else 0


def port_time_ms(time_module=time):
    """Milliseconds since the port's own epoch, as an int (time() is a float on Unix, an int on boards)."""
    ns = getattr(time_module, "time_ns", None)
    if ns is not None:
        return ns() // 1000000
    return int(time_module.time() * 1000)


def urandom(n):
    return os.urandom(n)


# Errors that mean "this TLS peer is not who it claims to be" or "the handshake failed". MicroPython
# raises ValueError for verification failures and OSError for I/O; CPython raises ssl.SSLError (an
# OSError) with SSLCertVerificationError as the verification subclass.
TLS_VERIFY_ERRORS = (ValueError,) if MICROPYTHON else (tls.SSLCertVerificationError,)


def tls_client_context(ca_ders):
    """A TLS client context that verifies the server against the given DER CA certificates.

    Verification is always on: there is deliberately no parameter to turn it off.
    """
    if not ca_ders:
        raise ValueError("TLS needs at least one CA certificate (DER)")
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    for der in ca_ders:
        if MICROPYTHON:
            ctx.load_verify_locations(der)  # positional only; called once per CA (they accumulate)
        else:
            ctx.check_hostname = True
            ctx.load_verify_locations(cadata=der)
    return ctx


def tls_wrap(ctx, sock, host):
    """Handshake as a client for host (SNI and host-name check)."""
    return ctx.wrap_socket(sock, server_hostname=host)


def sync():
    """Ask the OS to flush filesystem buffers, where the port has such a call."""
    fn = getattr(os, "sync", None)
    if fn is not None:
        fn()


def make_private(path):
    """Restrict a file holding secrets to its owner (host filesystems; boards have no permissions)."""
    chmod = getattr(os, "chmod", None)
    if chmod is not None:
        chmod(path, 0o600)


def print_exception(exc, file=sys.stderr):
    if MICROPYTHON:
        sys.print_exception(exc, file)
    else:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=file)


def collect():
    """Run the garbage collector and return free heap bytes (None where unknown, e.g. CPython)."""
    try:
        import gc

        gc.collect()
        return gc.mem_free() if hasattr(gc, "mem_free") else None
    except ImportError:
        return None
