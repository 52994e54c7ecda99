# Fake of MicroPython's frozen `ntptime` for host tests: settime() fails `failures` times (OSError
# ETIMEDOUT, as on a board when no answer comes within `timeout`), then sets the simulated device clock
# (machine.sim.time) to the true time. failures=-1: never succeeds.

import errno

import machine

host = "pool.ntp.org"
timeout = 1


class _Sim:
    pass


sim = _Sim()


def reset_sim(failures=0):
    global host
    host = "pool.ntp.org"
    sim.failures = failures
    sim.calls = 0
    sim.hosts = []
    return sim


reset_sim()


def time():
    """NTP time in the port's epoch (seconds)."""
    _ask()
    t = machine.sim.time
    return t.true_ms // 1000 - (machine.Y2K_S if t.epoch_year == 2000 else 0)


def _ask():
    sim.calls += 1
    sim.hosts.append(host)
    if sim.failures:
        if sim.failures > 0:
            sim.failures -= 1
        machine.sim.time.advance(timeout * 1000)  # the socket waited that long for an answer
        raise OSError(errno.ETIMEDOUT)


def settime():
    _ask()
    t = machine.sim.time
    t.set_device_unix_ms(t.true_ms - t.true_ms % 1000)
