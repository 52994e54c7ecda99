"""The node runtime: wake, measure, upload, sleep - the application around the mcagent library.

Each wake is a sequence of phases (boot, sample, upload, sleep). A phase imports what it needs and the
runtime releases it afterwards (`mcagent.compat.unload`): on a stock board the deployed .mpy bytecode lives
in the same small heap as the data, so code that runs once per wake must not stay for the whole wake.

    node.py      one wake's cycle: schedule, sample, upload, the secret's deadline, sleep
    nodecfg.py   node.json (board.json + settings.json compiled on the host by `mcagent deploy`)
    wake.py      boot: state from flash or RTC memory, crash streak, sensors, watchdog
    wifi.py      station mode with bounded tries          timesync.py   NTP, the server's time to the RTC
    health.py    the health event                         hw.py         the port's board modules
    unix.py      the unix board's command line            flashimage.py its littlefs image file
"""
