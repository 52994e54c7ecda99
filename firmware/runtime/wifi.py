"""Wi-Fi for an upload: station mode, bounded tries with backoff, the radio off after a failure.

Released after use (mcagent.compat.call_cold); the WLAN object stays with the node (node.wlan).
"""


def up(node):
    """Connect with bounded tries and backoff; True when up (or when the port needs no Wi-Fi)."""
    net = node.hw.network
    s = node.settings
    if net is None or not s.ssid:
        return True
    b = node.board
    hw = node.hw
    wlan = node.wlan
    if wlan is None:
        wlan = node.wlan = net.WLAN(net.STA_IF)
    if not wlan.active():
        wlan.active(True)
    if wlan.isconnected():
        return True
    try:
        wlan.config(reconnects=0)  # the node decides when to try again, not the driver
    except Exception:
        pass
    if s.hostname:
        try:
            net.hostname(s.hostname)
        except Exception:
            pass
    failed = []
    for name in (
        "STAT_WRONG_PASSWORD",
        "STAT_NO_AP_FOUND",
        "STAT_ASSOC_FAIL",
        "STAT_HANDSHAKE_TIMEOUT",
        "STAT_BEACON_TIMEOUT",
        "STAT_CONNECT_FAIL",
    ):
        code = getattr(net, name, None)
        if code is not None:
            failed.append(code)
    for attempt in range(b.wifi_attempts):
        if attempt:
            node.wait(min(b.wifi_backoff_ms << (attempt - 1), 60000))
        status = None
        try:
            wlan.connect(s.ssid, s.password)
            start = hw.ticks_ms()
            while True:
                hw.feed()
                if wlan.isconnected():
                    node.log("Wi-Fi up (try %d)" % (attempt + 1))
                    return True
                status = wlan.status()
                if status in failed or hw.ticks_diff(hw.ticks_ms(), start) >= b.wifi_timeout_ms:
                    break
                hw.sleep_ms(100)
        except OSError as e:
            status = repr(e)
        node.st["retries"] += 1
        node.log("Wi-Fi try %d failed (status %s)" % (attempt + 1, status))
        try:
            wlan.disconnect()
        except Exception:
            pass
    try:
        wlan.active(False)  # radio off until the next try: saves the battery
    except Exception:
        pass
    return False
