"""A board: board.json (hardware, sensors -> data points, schedule) and settings.json (site: Wi-Fi, files).

Both are checked up front, so that a wrong file stops the node at start-up with one message naming each
wrong field (`sensors[1].points[0].type: ...`) instead of a crash in the field. The data source
configuration (docs/protocol.md §E) is generated from board.json, so the data points the node records and the
ones Insights Hub expects cannot drift apart.

This validator is host-side code first: `mcagent deploy` runs it and installs the result, `node.json`
(see `compile`), so a board never loads these 500 lines of checks (their bytecode would cost ~20 KB of a
64 KB heap). The node runtime falls back to it once when node.json is missing or older than the two files.

The sensors are checked against their drivers (kinds, channels, options), which belong to the application
(the `sensors` package), not to this library: whoever checks a board.json hands them in, as `drivers` (an
object with KINDS and module(kind), e.g. the `sensors` package) or once for all calls in DRIVERS (the host
tools do that). The data point types are mcagent.errors.TYPES (the store's list).
"""

import json

from micropython import const

from mcagent import compat
from mcagent.errors import TYPES, BoardError

SLEEP_MODES = ("awake", "deep")
WHEN_FULL = ("drop_oldest", "stop")
# chip -> highest GPIO number
CHIPS = {"esp32": 39, "esp32s2": 46, "esp32s3": 48, "esp32c3": 21, "unix": 1023}
_ID_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
_MAX_ID = const(64)
_RESERVE_BLOCKS = const(40)  # the unix board's flash beside the store: directories, state files, run log,
# atomic copies, the store's spare segments and quarantine (a first wake used 26 blocks besides the store)
DRIVERS = None  # the sensor drivers parse() checks against when it is given none (see above)


# ---- small checkers: each returns the value (or a default) and appends a sentence on a problem --------


def _num(d, key, where, problems, default, lo=None, hi=None, whole=False):
    value = d.get(key, default)
    name = where + key if where.endswith(".") or not where else where + "." + key
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append("%s must be a number, got %s" % (name, _show(value)))
        return default
    if whole and not isinstance(value, int) and (not -1e18 < value < 1e18 or value != int(value)):  # NaN too
        problems.append("%s must be a whole number, got %s" % (name, _show(value)))
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        problems.append("%s must be between %s and %s, got %s" % (name, lo, hi, _show(value)))
        return default
    return int(value) if whole else value


def _text(d, key, where, problems, default=None, required=False):
    value = d.get(key, default)
    name = where + "." + key if where else key
    if value is None:
        if required:
            problems.append("%s is missing" % name)
        return None
    if not isinstance(value, str) or (required and not value):
        problems.append(
            "%s must be a%s string, got %s" % (name, " non-empty" if required else "", _show(value))
        )
        return default
    return value


def _ident(value, name, problems):
    """A name used as an id in the DSC or the state: letters, digits, - _ . only."""
    if not isinstance(value, str) or not value:
        problems.append("%s must be a non-empty string, got %s" % (name, _show(value)))
        return False
    bad = [c for c in memoryview(compat.utf8(value)) if c not in _ID_CHARS]
    if bad or len(value) > _MAX_ID:
        problems.append(
            "%s must be at most %d letters, digits, '-', '_' or '.', got %s" % (name, _MAX_ID, _show(value))
        )
        return False
    return True


def _obj(d, key, where, problems):
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append("%s must be an object, got %s" % (where + "." + key if where else key, _show(value)))
        return {}
    return value


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _pin(value, chip, name, problems):
    top = CHIPS.get(chip, 1023)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        problems.append(
            "%s must be a GPIO number from 0 to %d on the %s, got %s" % (name, top, chip, _show(value))
        )
        return False
    return True


def _unknown(d, known, where, problems):
    for key in d:
        if key not in known:
            problems.append(
                "%s is not a known field (known: %s)"
                % (where + "." + key if where else key, ", ".join(known))
            )


# ---- the board ---------------------------------------------------------------------------------------


class Point:
    """One data point: a sensor channel recorded under a DSC data point id."""

    def __init__(self, id, name, type, unit, channel, description=None, extra=None):
        self.id = id
        self.name = name
        self.type = type
        self.unit = unit
        self.channel = channel
        self.description = description
        self.extra = extra  # mapping fields handed to the DSC as they are (property, mappings, ...)

    def __repr__(self):
        return "<Point %s %s %s>" % (self.id, self.type, self.unit)


class Sensor:
    def __init__(self, kind, name, spec, points):
        self.kind = kind
        self.name = name
        self.spec = spec  # the board.json entry (drivers read their options from it)
        self.points = points

    def __repr__(self):
        return "<Sensor %s %s>" % (self.kind, self.name)


class Board:
    """The checked content of board.json. Times are in milliseconds."""

    def __init__(self):
        self.name = None
        self.chip = None
        self.description = ""
        self.heap_kb = None
        self.sensors = []
        self.sample_ms = 60000
        self.upload_samples = 10
        self.upload_ms = 600000
        self.sleep = "awake"
        self.upload_wake = False  # deep sleep: upload in a wake of its own (runtime.upwake)
        self.health_ms = 86400000
        self.watchdog_ms = 60000
        self.upload_budget_ms = 300000
        self.wifi_timeout_ms = 20000
        self.wifi_attempts = 3
        self.wifi_backoff_ms = 2000
        self.ntp_attempts = 3
        self.ntp_resync_ms = 86400000
        self.retry_cap_ms = 3600000
        self.min_deep_ms = 2000  # shorter waits are spent awake: a boot costs more than it saves
        self.store = {}
        self.configuration_id = None
        self.dsc_extra = {}
        self.safe_pin = None
        self.i2c = None
        self.speed = 1
        self.flash_blocks = 512

    def points(self):
        for s in self.sensors:
            for p in s.points:
                yield p

    def dsc(self):
        """The data source configuration (docs/protocol.md §E): one data source per sensor."""
        sources = []
        for s in self.sensors:
            dps = []
            for p in s.points:
                dp = {"id": p.id, "name": p.name, "type": p.type, "unit": p.unit}
                if p.description:
                    dp["description"] = p.description
                if p.extra:
                    for k in p.extra:
                        dp[k] = p.extra[k]
                dps.append(dp)
            sources.append(
                {"name": s.name, "description": "%s on %s" % (s.kind, self.name), "dataPoints": dps}
            )
        doc = {"configurationId": self.configuration_id, "dataSources": sources}
        for k in self.dsc_extra:
            doc[k] = self.dsc_extra[k]
        return doc

    def store_options(self):
        """Keyword arguments for the agent's flash store (mcagent.store.Store)."""
        return dict(self.store)

    def __repr__(self):
        return "<Board %s (%s) %d sensors>" % (self.name, self.chip, len(self.sensors))


_TOP = (
    "board",
    "chip",
    "description",
    "heap_kb",
    "pins",
    "i2c",
    "sensors",
    "schedule",
    "store",
    "watchdog_s",
    "upload_budget_s",
    "wifi",
    "ntp",
    "dsc",
    "sim",
    "flash",
)
_SCHEDULE = ("sample_s", "upload_samples", "upload_s", "sleep", "upload_wake", "health_s", "retry_cap_s")
_POINT = (
    "channel",
    "id",
    "name",
    "type",
    "unit",
    "description",
    "property",
    "mappings",
    "entityId",
    "propertySetName",
    "customData",
    "base",
    "amplitude",
    "period_s",
    "phase_s",
    "noise",
    "decimals",
    "cycle",
)


def parse(doc, source="board.json", drivers=None):
    """Check a decoded board.json (dict) against the sensor drivers (default: DRIVERS). Returns Board or
    raises BoardError naming every wrong field."""
    drivers = drivers or DRIVERS
    if drivers is None:
        raise TypeError("board.parse needs the sensor drivers (the sensors package): drivers= or DRIVERS")
    if not isinstance(doc, dict):
        raise BoardError(source, ["must be a JSON object"])
    p = []
    b = Board()
    _unknown(doc, _TOP, "", p)
    name = doc.get("board")
    if _ident(name, "board", p):
        b.name = name
    chip = doc.get("chip")
    if not isinstance(chip, str) or chip not in CHIPS:
        p.append("chip must be one of %s, got %s" % (", ".join(sorted(CHIPS)), _show(chip)))
        chip = "unix"
    b.chip = chip
    b.description = _text(doc, "description", "", p, "") or ""
    if "heap_kb" in doc:
        b.heap_kb = _num(doc, "heap_kb", "", p, None, 16, 100000, whole=True)

    pins = _obj(doc, "pins", "", p)
    for key in pins:
        _pin(pins[key], chip, "pins." + key, p)
    if "safe" in pins and isinstance(pins["safe"], int):
        b.safe_pin = pins["safe"]

    if "i2c" in doc:
        b.i2c = _i2c(doc.get("i2c"), chip, "i2c", p)

    _sensors(doc, b, p, drivers)

    sch = _obj(doc, "schedule", "", p)
    _unknown(sch, _SCHEDULE, "schedule", p)
    b.sample_ms = int(_num(sch, "sample_s", "schedule", p, 60, 0.001, 86400 * 7) * 1000)
    b.upload_samples = _num(sch, "upload_samples", "schedule", p, 10, 0, 100000, whole=True)
    b.upload_ms = int(_num(sch, "upload_s", "schedule", p, 600, 0, 86400 * 30) * 1000)
    if b.upload_samples == 0 and b.upload_ms == 0:
        p.append("schedule: upload_samples and upload_s are both 0, so nothing would ever be uploaded")
    b.sleep = sch.get("sleep", "awake")
    if b.sleep not in SLEEP_MODES:
        p.append("schedule.sleep must be \"awake\" or \"deep\", got %s" % _show(b.sleep))
    b.upload_wake = sch.get("upload_wake", False)
    if not isinstance(b.upload_wake, bool):
        p.append("schedule.upload_wake must be true or false, got %s" % _show(b.upload_wake))
    elif b.upload_wake and b.sleep != "deep":
        p.append('schedule.upload_wake needs schedule.sleep "deep" (the upload gets a wake of its own)')
    b.health_ms = int(_num(sch, "health_s", "schedule", p, 86400, 60, 86400 * 30) * 1000)
    b.retry_cap_ms = int(_num(sch, "retry_cap_s", "schedule", p, 3600, 10, 86400) * 1000)

    wd = _num(doc, "watchdog_s", "", p, 60, 0, 7200)
    if wd and wd < 10:
        p.append("watchdog_s must be 0 (off) or at least 10, got %s" % _show(wd))
    b.watchdog_ms = int(wd * 1000)
    b.upload_budget_ms = int(_num(doc, "upload_budget_s", "", p, 300, 10, 7200) * 1000)

    wifi = _obj(doc, "wifi", "", p)
    _unknown(wifi, ("timeout_s", "attempts", "backoff_s"), "wifi", p)
    b.wifi_timeout_ms = int(_num(wifi, "timeout_s", "wifi", p, 20, 1, 300) * 1000)
    b.wifi_attempts = _num(wifi, "attempts", "wifi", p, 3, 1, 20, whole=True)
    b.wifi_backoff_ms = int(_num(wifi, "backoff_s", "wifi", p, 2, 0, 300) * 1000)
    if b.watchdog_ms and b.wifi_timeout_ms >= b.watchdog_ms:
        pass  # the connect loop feeds the watchdog while it polls; no constraint needed

    ntp = _obj(doc, "ntp", "", p)
    _unknown(ntp, ("attempts", "resync_s"), "ntp", p)
    b.ntp_attempts = _num(ntp, "attempts", "ntp", p, 3, 0, 20, whole=True)
    b.ntp_resync_ms = int(_num(ntp, "resync_s", "ntp", p, 86400, 60, 86400 * 30) * 1000)

    store = _obj(doc, "store", "", p)
    _unknown(store, ("capacity_kb", "when_full", "commit_every"), "store", p)
    b.store["capacity_bytes"] = _num(store, "capacity_kb", "store", p, 256, 16, 1 << 22, whole=True) * 1024
    when = store.get("when_full", "drop_oldest")
    if when not in WHEN_FULL:
        p.append("store.when_full must be \"drop_oldest\" or \"stop\", got %s" % _show(when))
    b.store["policy"] = when
    if "commit_every" in store:
        b.store["commit_every"] = _num(store, "commit_every", "store", p, 1, 1, 1000, whole=True)

    dsc = _obj(doc, "dsc", "", p)
    _unknown(dsc, ("configurationId", "entityId", "propertySetName"), "dsc", p)
    cid = dsc.get("configurationId")
    if cid is None:  # made from the board's name: too long a name is named, not a field nobody wrote
        cid = "CF-" + (b.name or "board")[: _MAX_ID - 3]
    if _ident(cid, "dsc.configurationId", p):
        b.configuration_id = cid
    for key in ("entityId", "propertySetName"):
        if key in dsc and _text(dsc, key, "dsc", p, required=True):
            b.dsc_extra[key] = dsc[key]

    sim = _obj(doc, "sim", "", p)
    _unknown(sim, ("speed",), "sim", p)
    b.speed = _num(sim, "speed", "sim", p, 1, 0.001, 100000)
    flash = _obj(doc, "flash", "", p)
    _unknown(flash, ("blocks",), "flash", p)
    known = len(p)
    b.flash_blocks = _num(flash, "blocks", "flash", p, 512, 16, 1 << 20, whole=True)
    room = (b.flash_blocks - _RESERVE_BLOCKS) * 4 if len(p) == known else None  # not for a wrong blocks
    if b.chip == "unix" and room is not None and b.store["capacity_bytes"] > room * 1024:
        # The store shrinks a capacity the flash cannot hold when it opens: the buffer would quietly be less.
        p.append(
            "store.capacity_kb %d does not fit the unix board's flash (flash.blocks %d: %d KB, %d of "
            "them for the node's own files): at most %d (or more flash.blocks)"
            % (
                b.store["capacity_bytes"] // 1024,
                b.flash_blocks,
                b.flash_blocks * 4,
                _RESERVE_BLOCKS * 4,
                max(0, room),
            )
        )

    if not p:  # the DSC and mappings it makes, checked as the agent will build them at its first upload
        from mcagent import dsc as dscmod
        from mcagent.errors import DscError

        try:
            dscmod.build(b.dsc())
        except DscError as e:
            p.append("its data source configuration would be refused: %s" % e)
    if p:
        raise BoardError(source, p)
    return b


def _i2c(value, chip, where, p):
    if not isinstance(value, dict):
        p.append(
            "%s must be an object like {\"id\": 0, \"scl\": 22, \"sda\": 21}, got %s" % (where, _show(value))
        )
        return None
    _unknown(value, ("id", "scl", "sda", "freq"), where, p)
    for key in ("scl", "sda"):
        if key not in value:
            p.append("%s.%s is missing (the GPIO number)" % (where, key))
        else:
            _pin(value[key], chip, where + "." + key, p)
    bus = value.get("id", 0)
    if isinstance(bus, bool) or not isinstance(bus, int) or bus not in (-1, 0, 1):
        p.append("%s.id must be 0 or 1 (hardware I2C) or -1 (SoftI2C), got %s" % (where, _show(bus)))
    if "freq" in value:  # kept as the int it was checked as: machine.I2C takes no 4e5
        value["freq"] = _num(value, "freq", where, p, 100000, 1000, 1000000, whole=True)
    return value


def _sensors(doc, b, p, drivers):
    kinds = drivers.KINDS
    sensors = doc.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        p.append("sensors must be a non-empty list of sensors")
        return
    names = {}
    ids = {}
    for i in range(len(sensors)):
        s = sensors[i]
        where = "sensors[%d]" % i
        if not isinstance(s, dict):
            p.append("%s must be an object with kind, name and points" % where)
            continue
        kind = s.get("kind")
        if kind not in kinds:
            p.append("%s.kind must be one of %s, got %s" % (where, ", ".join(kinds), _show(kind)))
            continue
        mod = drivers.module(kind)
        name = s.get("name", kind)
        if _ident(name, where + ".name", p):
            if name in names:
                p.append("%s.name %s is used twice (also by %s)" % (where, _show(name), names[name]))
            names[name] = where
        if kind == "bme280":
            if "i2c" in s:
                _i2c(s["i2c"], b.chip, where + ".i2c", p)
            elif b.i2c is None:
                p.append("%s: a bme280 needs an I2C bus: give \"i2c\" here or at the top" % where)
            else:
                s = dict(s)
                s["i2c"] = b.i2c
        mod.check(s, b.chip, where, p)
        points = _points(s, mod.CHANNELS, where, ids, p)
        b.sensors.append(Sensor(kind, name, s, points))


def _points(s, channels, where, ids, p):
    pts = s.get("points")
    if not isinstance(pts, list) or not pts:
        p.append("%s.points must be a non-empty list of data points" % where)
        return []
    out = []
    for j in range(len(pts)):
        d = pts[j]
        w = "%s.points[%d]" % (where, j)
        if not isinstance(d, dict):
            p.append("%s must be an object with at least an id" % w)
            continue
        _unknown(d, _POINT, w, p)
        channel = d.get("channel")
        if channel is None and channels is not None and len(channels) == 1:
            channel = list(channels)[0]
        if channels is None:
            if not isinstance(channel, str) or not channel:
                p.append("%s.channel must name the simulated signal, got %s" % (w, _show(channel)))
                continue
            default_type, default_unit = "DOUBLE", ""
        elif channel not in channels:
            p.append(
                "%s.channel must be one of %s, got %s" % (w, ", ".join(sorted(channels)), _show(channel))
            )
            continue
        else:
            default_type, default_unit = channels[channel]
        pid = d.get("id")
        if not _ident(pid, w + ".id", p):
            continue
        if pid in ids:
            p.append(
                "%s.id %s is used twice (also by %s): data point ids are unique per agent"
                % (w, _show(pid), ids[pid])
            )
            continue
        ids[pid] = w
        typ = d.get("type", default_type)
        if typ not in TYPES:
            p.append("%s.type must be one of %s, got %s" % (w, ", ".join(TYPES), _show(typ)))
            continue
        unit = _text(d, "unit", w, p, default_unit)
        pname = _text(d, "name", w, p, pid) or pid
        desc = _text(d, "description", w, p)
        extra = None
        for key in ("property", "mappings", "entityId", "propertySetName", "customData"):
            if key in d:
                if extra is None:
                    extra = {}
                extra[key] = d[key]
        out.append(Point(pid, pname, typ, unit if unit is not None else "", channel, desc, extra))
    return out


def _read_json(path, what):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise BoardError(path, ["cannot be read: put the %s there" % what])
    try:
        return json.loads(text)
    except ValueError:
        raise BoardError(path, ["is not valid JSON (a missing comma or quote?)"])


def load(path="board.json", drivers=None):
    """Read and check board.json (against drivers, see parse). Raises BoardError naming every wrong field."""
    return parse(_read_json(path, "board definition (boards/<name>/board.json)"), path, drivers)


# ---- settings.json: what differs per site and node ----------------------------------------------------


class Settings:
    """The checked content of settings.json. The Wi-Fi password is never part of a message or repr."""

    def __init__(self):
        self.ssid = None
        self.password = None
        self.hostname = None
        self.agentconfig = "agentconfig.json"
        self.ca = None  # None: every *.der file in certs/ (where `mcagent deploy` puts them)
        self.proxy = None
        self.ntp_host = None
        # not "mcagent": a directory of that name in / would shadow /lib/mcagent
        self.state_dir = "agent-state"
        self.runlog = "runlog.txt"

    def __repr__(self):
        return "<Settings ssid=%r agentconfig=%r>" % (self.ssid, self.agentconfig)


def parse_settings(doc, source="settings.json"):
    if not isinstance(doc, dict):
        raise BoardError(source, ["must be a JSON object"])
    p = []
    s = Settings()
    _unknown(doc, ("wifi", "agentconfig", "ca", "proxy", "ntp_host", "state_dir", "runlog"), "", p)
    wifi = doc.get("wifi")
    if wifi is not None:
        if not isinstance(wifi, dict):
            p.append("wifi must be an object {\"ssid\": ..., \"password\": ...}")
        else:
            _unknown(wifi, ("ssid", "password", "hostname"), "wifi", p)
            s.ssid = _text(wifi, "ssid", "wifi", p, required=True)
            pw = wifi.get("password", "")
            if not isinstance(pw, str):
                p.append("wifi.password must be a string (\"\" for an open network)")
            else:
                s.password = pw
            s.hostname = _text(wifi, "hostname", "wifi", p)
    s.agentconfig = _text(doc, "agentconfig", "", p, s.agentconfig, required=True) or s.agentconfig
    ca = doc.get("ca")
    if isinstance(ca, str):
        ca = [ca]
    if ca is not None:
        if not isinstance(ca, list) or not ca or [c for c in ca if not isinstance(c, str) or not c]:
            p.append(
                "ca must list the CA certificate files (DER), e.g. [\"certs/ca.der\"], got %s" % _show(ca)
            )
        else:
            s.ca = ca
    s.proxy = _text(doc, "proxy", "", p)
    s.ntp_host = _text(doc, "ntp_host", "", p)
    s.state_dir = _text(doc, "state_dir", "", p, s.state_dir, required=True) or s.state_dir
    s.runlog = _text(doc, "runlog", "", p, s.runlog, required=True) or s.runlog
    if p:
        raise BoardError(source, p)
    return s


def load_settings(path="settings.json"):
    """settings.json, or the defaults when the file does not exist (the unix board needs no Wi-Fi)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return Settings()
    try:
        doc = json.loads(text)
    except ValueError:
        raise BoardError(path, ["is not valid JSON (a missing comma or quote?)"])
    return parse_settings(doc, path)


def compile(board, settings, sources=None):
    """node.json: what the node runtime reads at each boot instead of board.json and settings.json - the
    checked values as plain JSON (times in ms, the DSC generated, points as [id, channel, type]).

    sources: [[size, mtime] of board.json, of settings.json], so the board notices a file changed since."""
    doc = {"node": 1}
    for k in (
        "name",
        "chip",
        "sample_ms",
        "upload_samples",
        "upload_ms",
        "sleep",
        "upload_wake",
        "health_ms",
        "watchdog_ms",
        "upload_budget_ms",
        "wifi_timeout_ms",
        "wifi_attempts",
        "wifi_backoff_ms",
        "ntp_attempts",
        "ntp_resync_ms",
        "retry_cap_ms",
        "min_deep_ms",
        "safe_pin",
        "speed",
        "flash_blocks",
        "heap_kb",
    ):
        doc[k] = getattr(board, k)
    doc["sensors"] = [
        {
            "kind": s.kind,
            "name": s.name,
            "spec": s.spec,
            "points": [[p.id, p.channel, p.type] for p in s.points],
        }
        for s in board.sensors
    ]
    doc["dsc"] = board.dsc()
    doc["store"] = board.store_options()
    doc["settings"] = {
        "ssid": settings.ssid,
        "password": settings.password,
        "hostname": settings.hostname,
        "agentconfig": settings.agentconfig,
        "ca": settings.ca,
        "proxy": settings.proxy,
        "ntp_host": settings.ntp_host,
        "state_dir": settings.state_dir,
        "runlog": settings.runlog,
    }
    doc["sources"] = sources
    return doc
