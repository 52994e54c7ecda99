"""Time phase of an upload: NTP when due, and the server's time written to the RTC when NTP failed.

Released after use (mcagent.compat.call_cold).
"""

from mcagent import compat
from mcagent.clock import iso_ms


def sync_clock(node):
    """NTP when the device clock is unset or due for a resync; True if the device clock is good.

    A network that blocks NTP costs its tries once per resync period, not once per upload: after a
    failure the server's Date sets the clock, and the device clock then counts as good until the resync.
    Called where the port has NTP and the board tries it (Node.sync_clock answers for the others).
    """
    ntp = node.hw.ntptime
    b = node.board
    st = node.st
    now = node.clock.now_ms()
    if node.device_sane() and st["ntp_ms"] and 0 <= now - st["ntp_ms"] < b.ntp_resync_ms:
        return True
    if node.settings.ntp_host:
        ntp.host = node.settings.ntp_host
    st["ntp_ms"] = now  # tried now: with a clock from the server, the next try waits for the resync time
    for i in range(b.ntp_attempts):
        node.hw.feed()
        try:
            ntp.settime()
        except Exception as e:  # OSError on timeout; ValueError/IndexError on a garbled answer
            st["retries"] += 1
            node.log("NTP try %d failed: %r" % (i + 1, e))
            if i + 1 < b.ntp_attempts:
                node.wait(1000 * (i + 1))
            continue
        node.clock.correction_ms = 0  # the device clock is right now; a learned correction is void
        node.settle()
        st["ntp_ms"] = node.clock.now_ms()
        node.log("clock set by NTP: %s" % iso_ms(st["ntp_ms"]))
        return True
    node.log("NTP failed: the time comes from the server's Date")
    return node.device_sane()


def adopt_learned_time(node):
    """The agent learned the time from the server while the device clock is unset: set the RTC, so the
    time survives deep sleep and a correction never outlives the power cut that voids it."""
    if node.device_sane() or not node.clock.is_sane():
        return
    t = node.clock.now_ms()
    if compat.call_cold("runtime.hwcold", "set_time", node.hw, t // 1000):
        node.clock.correction_ms = 0
        node.clock.correction_ms = t - node.clock.device_ms()
        node.settle()
        node.log("RTC set from the server's time: %s" % iso_ms(t))
