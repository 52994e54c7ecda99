"""The node runtime: wake, measure, upload, sleep - the application around the mcagent library.

Each wake is a sequence of phases (boot, sample, upload, sleep). A phase imports what it needs and the
runtime releases it afterwards (`mcagent.compat.unload`): on a stock board the deployed .mpy bytecode lives
in the same small heap as the data, so code that runs once per wake must not stay for the whole wake.

    node.py      one boot of the node: its state and what every phase shares (log, state saves, watchdog)
    cycle.py     the order of a cycle around its upload, and the rest between cycles (sleep, deep sleep)
    sampling.py  sensors and readings                     schedule.py   what is due, how long to sleep
    nodecfg.py   node.json (board.json + settings.json compiled on the host by `mcagent deploy`)
    wake.py      boot: state from flash or RTC memory, crash streak, sensors, watchdog
    upwake.py    the upload wake: a boot that uploads before the node loads (schedule.upload_wake);
    upsetup.py   its setup (node.json, watchdog, Wi-Fi, the agent), released before the flush
    wifi.py      station mode with bounded tries          timesync.py   NTP, the server's time to the RTC
    health.py    the health event                         hw.py         the port's board modules (hwcold.py:
    unix.py      the unix board's command line                          what a wake asks of them once)
    flashimage.py  the unix board's littlefs image file     unixrtc.py    its RTC memory between --wake runs
"""


class Cfg:
    """Attribute access over a decoded JSON object: board values (`cfg.sample_ms`), settings (`s.ssid`).

    Made by runtime.nodecfg and held for the whole wake, so it lives here: a class keeps the module that
    defines it in the heap (its methods hold that module's globals), and nodecfg is released after use."""

    def __init__(self, doc):
        for k in doc:
            setattr(self, k, doc[k])


def path(root, name):
    """A file of the node: relative names live in root (the flash root on a board: "")."""
    if not root or name.startswith("/"):
        return name
    return root + "/" + name
