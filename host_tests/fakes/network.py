# Fake of MicroPython's `network` module (ESP32 flavour) for host tests, on CPython and MicroPython alike.
#
# Connection attempts follow a script: reset_sim(script=["no_ap", "timeout", "ok"]) makes the first
# connect() find no access point, the second never finish, the third succeed; after the script the
# `default` outcome applies. Outcomes take `connect_ms` of simulated time (machine.sim.time) to settle.

import machine

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

_OUTCOME_STATUS = {
    "ok": STAT_GOT_IP,
    "no_ap": STAT_NO_AP_FOUND,
    "wrong_password": STAT_WRONG_PASSWORD,
    "timeout": STAT_CONNECTING,  # never settles
}


class _Sim:
    pass


sim = _Sim()


def reset_sim(script=None, default="ok", connect_ms=1500):
    sim.script = list(script or [])
    sim.default = default
    sim.connect_ms = connect_ms
    sim.connects = 0  # connect() calls
    sim.outcomes = []  # outcome used for each connect()
    sim.config = {}
    sim.hostname = "esp32"
    sim.active = False
    sim.connected = False
    sim.pending = None  # (ticks when settled, outcome)
    sim.ssid = None
    sim.key = None
    return sim


reset_sim()


def hostname(name=None):
    if name is None:
        return sim.hostname
    sim.hostname = name


def _now():
    return machine.sim.time.ticks


def _settle():
    if sim.pending is not None and _now() >= sim.pending[0]:
        outcome = sim.pending[1]
        if outcome == "ok":
            sim.connected = True
            sim.pending = None


def drop():
    """The access point went away: the station is no longer connected."""
    sim.connected = False
    sim.pending = None


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface

    def active(self, on=None):
        if on is None:
            return sim.active
        sim.active = bool(on)
        if not on:
            sim.connected = False
            sim.pending = None
        return None

    def connect(self, ssid=None, key=None, **kw):
        if not sim.active:
            raise OSError("Wifi Not Started")
        sim.connects += 1
        sim.ssid = ssid
        sim.key = key
        outcome = sim.script.pop(0) if sim.script else sim.default
        sim.outcomes.append(outcome)
        sim.connected = False
        sim.pending = (_now() + sim.connect_ms, outcome)

    def disconnect(self):
        sim.connected = False
        sim.pending = None

    def isconnected(self):
        _settle()
        return sim.connected

    def status(self, param=None):
        if param == "rssi":
            return -60
        _settle()
        if sim.connected:
            return STAT_GOT_IP
        if sim.pending is None:
            return STAT_IDLE
        if _now() < sim.pending[0]:
            return STAT_CONNECTING
        return _OUTCOME_STATUS.get(sim.pending[1], STAT_CONNECTING)

    def config(self, *args, **kw):
        if args:
            return sim.config.get(args[0])
        for k in kw:
            sim.config[k] = kw[k]

    def ifconfig(self, *args):
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")

    def scan(self):
        return []
