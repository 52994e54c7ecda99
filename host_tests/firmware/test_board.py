"""board.json / settings.json: parsing, one clear message per wrong field, the DSC, the hardware layer over
the board modules (with the fakes), the freeze manifests, and the unix board's littlefs flash image."""

import json
import os
import sys

import machine

import sensors
from checks import Skip, raises
from mcagent import board, compat
from runtime import flashimage, hwcold, nodecfg
from runtime import hw as rhw

ROOT = __file__.rsplit("/", 3)[0]  # host_tests/firmware/test_board.py -> repository root
BOARDS = ("esp32_generic", "esp32s3", "esp32c3", "unix")


def _read(path):
    with open(path) as f:
        return f.read()


def _doc(name="unix"):
    return json.loads(_read(ROOT + "/boards/" + name + "/board.json"))


def _minimal():
    return {
        "board": "t1",
        "chip": "esp32",
        "i2c": {"scl": 22, "sda": 21},
        "sensors": [
            {"kind": "bme280", "name": "air", "points": [
                {"channel": "temperature", "id": "DP-T"},
                {"channel": "humidity", "id": "DP-H", "name": "Humidity", "description": "relative"}]},
            {"kind": "adc", "name": "bat", "pin": 35, "points": [{"channel": "voltage", "id": "DP-V"}]},
        ],
    }


def _problems(doc):
    e = raises(board.BoardError, board.parse, doc, "board.json", sensors)
    return e.problems, str(e)


def test_every_shipped_board_parses():
    for name in BOARDS:
        b = board.load(ROOT + "/boards/" + name + "/board.json", sensors)
        assert b.name == name, b.name
        assert b.sensors and b.configuration_id
        ids = [p.id for p in b.points()]
        assert len(ids) == len(set(ids))
        assert b.sleep in ("awake", "deep")
        assert b.heap_kb


def test_defaults_and_times_in_ms():
    b = board.parse(_minimal(), "board.json", sensors)
    assert b.chip == "esp32" and b.sample_ms == 60000 and b.upload_samples == 10 and b.upload_ms == 600000
    assert b.sleep == "awake" and b.watchdog_ms == 60000 and b.health_ms == 86400000
    assert b.configuration_id == "CF-t1"
    assert b.store_options() == {"capacity_bytes": 256 * 1024, "policy": "drop_oldest"}
    pts = list(b.points())
    assert [(p.id, p.type, p.unit, p.channel) for p in pts] == [
        ("DP-T", "DOUBLE", "°C", "temperature"),
        ("DP-H", "DOUBLE", "%", "humidity"),
        ("DP-V", "DOUBLE", "V", "voltage"),
    ]
    # the board-level I2C bus is handed to the BME280
    assert b.sensors[0].spec["i2c"] == {"scl": 22, "sda": 21}


def test_dsc_generated_from_board():
    b = board.parse(_minimal(), "board.json", sensors)
    assert b.dsc() == {
        "configurationId": "CF-t1",
        "dataSources": [
            {"name": "air", "description": "bme280 on t1", "dataPoints": [
                {"id": "DP-T", "name": "DP-T", "type": "DOUBLE", "unit": "°C"},
                {"id": "DP-H", "name": "Humidity", "type": "DOUBLE", "unit": "%",
                 "description": "relative"}]},
            {"name": "bat", "description": "adc on t1", "dataPoints": [
                {"id": "DP-V", "name": "DP-V", "type": "DOUBLE", "unit": "V"}]},
        ],
    }
    u = board.load(ROOT + "/boards/unix/board.json", sensors).dsc()
    assert (u["configurationId"] == "CF-unix" and u["propertySetName"] == "UnixNode"
            and len(u["entityId"]) == 32)
    parts = u["dataSources"][1]["dataPoints"][0]
    assert parts == {"id": "DP-PartsPerMinute", "name": "PartsPerMinute", "type": "INT", "unit": "1/min",
                     "property": "PartsPerMinute"}


def test_a_long_board_name_makes_a_configuration_id_that_fits():
    doc = _minimal()
    doc["board"] = "b" * 64  # the longest name; "CF-" + it would be 67 characters
    b = board.parse(doc, "board.json", sensors)
    assert b.configuration_id == "CF-" + "b" * 61


def test_dsc_mapping_fields_pass_through():
    doc = _minimal()
    doc["dsc"] = {"configurationId": "CF-x", "entityId": "a" * 32, "propertySetName": "Air"}
    doc["sensors"][0]["points"][0]["property"] = "Temperature"
    d = board.parse(doc, "board.json", sensors).dsc()
    assert d["entityId"] == "a" * 32 and d["propertySetName"] == "Air"
    assert d["dataSources"][0]["dataPoints"][0]["property"] == "Temperature"


def test_wrong_fields_are_named():
    cases = [
        (lambda d: d.update(chip="esp8266"), "chip must be one of"),
        (lambda d: d.update(chip=["esp32"]), "chip must be one of"),  # not a crash on an unhashable value
        (lambda d: d["i2c"].update(id=0.0), "id must be 0 or 1"),  # a float the port's I2C() refuses
        (lambda d: d["i2c"].update(freq=float("inf")), "freq must be a whole number"),
        (lambda d: d["sensors"][0].update(address=118.0), "address must be 118"),
        # a mapping target without its asset: refused here, not by every upload on the board
        (lambda d: d["sensors"][0]["points"][0].update(property="T"), "configuration would be refused"),
        (lambda d: d.update(board="my board"), "board must be at most"),
        (lambda d: d.pop("sensors"), "sensors must be a non-empty list"),
        (lambda d: d["sensors"][0].update(kind="dht22"), "sensors[0].kind must be one of"),
        (lambda d: d["sensors"][1].update(pin=25), "sensors[1].pin: GPIO 25 is not on ADC1 of the esp32"),
        (lambda d: d["sensors"][1].update(atten="12dB"), "sensors[1].atten must be one of"),
        (lambda d: d["sensors"][0].update(address=0x40), "sensors[0].address must be 118"),
        (lambda d: d["sensors"][0]["points"][0].update(type="FLOAT"),
         "sensors[0].points[0].type must be one of"),
        (lambda d: d["sensors"][0]["points"][0].update(channel="temp"),
         "sensors[0].points[0].channel must be one of"),
        (lambda d: d["sensors"][0]["points"][1].update(id="DP-T"),
         "sensors[0].points[1].id \"DP-T\" is used twice"),
        (lambda d: d["sensors"][0]["points"][0].pop("id"),
         "sensors[0].points[0].id must be a non-empty string"),
        (lambda d: d["sensors"][0]["points"][0].update(unit=5), "sensors[0].points[0].unit must be a string"),
        (lambda d: d["sensors"][0]["points"][0].update(colour="red"),
         "sensors[0].points[0].colour is not a known field"),
        (lambda d: d["sensors"][1].update(name="air"), "sensors[1].name \"air\" is used twice"),
        (lambda d: d.update(schedule={"sample_s": "60"}), "schedule.sample_s must be a number, got \"60\""),
        (lambda d: d.update(schedule={"sample_s": 0}), "schedule.sample_s must be between"),
        (lambda d: d.update(schedule={"sleep": "light"}), "schedule.sleep must be \"awake\" or \"deep\""),
        (lambda d: d.update(schedule={"sleep": "deep", "upload_wake": 1}),
         "schedule.upload_wake must be true or false, got 1"),
        (lambda d: d.update(schedule={"upload_wake": True}),
         "schedule.upload_wake needs schedule.sleep \"deep\""),
        (lambda d: d.update(schedule={"upload_samples": 2.5}),
         "schedule.upload_samples must be a whole number"),
        (lambda d: d.update(schedule={"upload_samples": 0, "upload_s": 0}), "nothing would ever be uploaded"),
        (lambda d: d.update(schedule={"sample": 60}), "schedule.sample is not a known field"),
        (lambda d: d.update(watchdog_s=5), "watchdog_s must be 0 (off) or at least 10"),
        (lambda d: d.update(store={"when_full": "overwrite"}), "store.when_full must be"),
        (lambda d: d.update(store={"capacity_kb": True}), "store.capacity_kb must be a number, got true"),
        (lambda d: d.update(i2c={"scl": 22}), "i2c.sda is missing"),
        (lambda d: d.update(i2c={"scl": 22, "sda": 60}), "i2c.sda must be a GPIO number from 0 to 39"),
        (lambda d: d.pop("i2c"), "sensors[0]: a bme280 needs an I2C bus"),
        (lambda d: d.update(pins={"safe": -1}), "pins.safe must be a GPIO number"),
        (lambda d: d.update(wifi={"attempts": 0}), "wifi.attempts must be between 1 and 20"),
        (lambda d: d.update(dsc={"configurationId": "CF 1"}), "dsc.configurationId must be at most"),
        (lambda d: d.update(extra=1), "extra is not a known field"),
    ]
    for change, expected in cases:
        doc = _minimal()
        change(doc)
        problems, text = _problems(doc)
        assert len(problems) == 1, (expected, problems)
        assert expected in problems[0], (expected, problems[0])
        assert text.startswith("board.json: "), text


def test_upload_wake_goes_into_node_json():
    """schedule.upload_wake (a deep-sleeping board uploads in a wake of its own) reaches the runtime."""
    doc = _minimal()
    for schedule, compiled in (({"sleep": "deep", "upload_wake": True}, True), ({"sleep": "deep"}, False)):
        doc["schedule"] = schedule
        node = board.compile(board.parse(doc, "board.json", sensors), board.parse_settings({}))
        assert node["upload_wake"] is compiled


def test_a_unix_store_that_does_not_fit_its_flash_image_is_refused():
    """The store shrinks a capacity the flash cannot hold when it opens: the buffer would quietly be smaller
    than board.json says (refused at deploy, not found out after an outage in the field)."""
    with open(ROOT + "/boards/unix/board.json") as f:
        doc = json.loads(f.read())
    doc["flash"] = {"blocks": 256}  # 1024 KB, 160 of them for the node's own files
    doc["store"] = {"capacity_kb": 864}
    assert board.parse(doc, "board.json", sensors).store["capacity_bytes"] == 864 * 1024
    doc["store"] = {"capacity_kb": 868}
    problems, _ = _problems(doc)
    assert problems == [
        "store.capacity_kb 868 does not fit the unix board's flash (flash.blocks 256: 1024 KB, 160 of them"
        " for the node's own files): at most 864 (or more flash.blocks)"
    ], problems
    doc["flash"] = {"blocks": 8}  # named once, as what it is
    assert _problems(doc)[0] == ["flash.blocks must be between 16 and 1048576, got 8"]
    doc["flash"] = {"blocks": 256}
    doc["chip"] = "esp32"  # a board's filesystem is checked by deploy, against what the board reports
    doc.pop("sim")
    doc["sensors"] = _minimal()["sensors"][1:]
    assert board.parse(doc, "board.json", sensors).store["capacity_bytes"] == 868 * 1024


def test_all_problems_reported_at_once():
    doc = _minimal()
    doc["chip"] = "esp32c3"  # GPIO 22 and 35 do not exist there; 35 is not ADC1 either
    doc["schedule"] = {"sleep": "hibernate"}
    problems, text = _problems(doc)
    assert len(problems) == 3, problems
    assert "board.json has 3 problems" in text
    assert "i2c.scl must be a GPIO number from 0 to 21 on the esp32c3" in text
    assert "sensors[1].pin: GPIO 35 is not on ADC1 of the esp32c3 (use GPIO 0-4" in text
    assert "schedule.sleep" in text


def test_adc1_pins_per_chip():
    for chip, good, bad in (("esp32", 32, 4), ("esp32s3", 10, 11), ("esp32c3", 4, 5)):
        doc = {"board": "b", "chip": chip,
               "sensors": [{"kind": "adc", "pin": good, "points": [{"channel": "raw", "id": "DP-R"}]}]}
        b = board.parse(doc, "board.json", sensors)
        p = list(b.points())[0]
        assert (p.type, p.unit) == ("INT", "")
        doc["sensors"][0]["pin"] = bad
        problems, _ = _problems(doc)
        assert "not on ADC1" in problems[0], problems


def test_sim_points_need_channels_and_numbers():
    doc = _doc("unix")
    doc["sensors"][0]["points"][0]["amplitude"] = "big"
    doc["sensors"][0]["points"][1].pop("channel")
    problems, _ = _problems(doc)
    assert len(problems) == 2, problems
    assert "sensors[0].points[0].amplitude must be a number" in problems[0]
    assert "sensors[0].points[1].channel must name the simulated signal" in problems[1]
    doc = _doc("unix")
    doc["sensors"][0]["seed"] = 7.5  # the noise generator masks it as an int
    doc["sensors"][0]["points"][1]["channel"] = doc["sensors"][0]["points"][0]["channel"]
    problems, _ = _problems(doc)
    assert "sensors[0].seed must be a whole number, got 7.5" in problems[0], problems
    assert "sensors[0].points[1].channel 'temperature' is used twice in this sensor" in problems[1], problems
    doc = _doc("unix")
    doc["chip"] = "esp32"
    doc["sensors"].append({"kind": "mcu_temp", "points": [{"id": "DP-C"}]})
    # a sim sensor works on any chip; mcu_temp has one channel, so it is implied
    b = board.parse(doc, "board.json", sensors)
    assert list(b.points())[-1].channel == "temperature"
    doc["chip"] = "unix"
    problems, _ = _problems(doc)
    assert "the unix board has no MCU temperature sensor" in problems[0]


def test_convert_to_the_point_type():
    convert = sensors.convert  # what the runtime's sampling uses for each point
    assert convert("DOUBLE", 3) == 3.0
    assert convert("INT", 2.6) == 3
    assert convert("LONG", 7) == 7
    assert convert("BOOLEAN", 0) is False
    assert convert("STRING", 1.5) == "1.5"
    raises(ValueError, convert, "DOUBLE", "x")


def test_one_list_of_data_point_types():
    """The DSC and board.json checks use mcagent.errors.TYPES (small, always loaded), the store its TYPES:
    one list, in the order of the codes on flash (code = index + 1)."""
    from mcagent import errors, store

    assert tuple(store.TYPES) == errors.TYPES
    assert errors.TYPES[:3] == ("DOUBLE", "INT", "LONG")


def test_the_drivers_come_from_the_caller():
    """mcagent.board does not import the application's sensors: whoever checks a board.json hands in the
    drivers (the runtime, the host tools through board.DRIVERS)."""
    assert board.DRIVERS is None or board.DRIVERS is sensors
    saved = board.DRIVERS
    board.DRIVERS = None
    try:
        raises(TypeError, board.parse, _minimal())
    finally:
        board.DRIVERS = saved


def test_load_errors(workdir):
    e = raises(board.BoardError, board.load, workdir + "/missing.json", sensors)
    assert "cannot be read" in str(e) and "missing.json" in str(e)
    with open(workdir + "/bad.json", "w") as f:
        f.write('{"board": "x"')
    e = raises(board.BoardError, board.load, workdir + "/bad.json", sensors)
    assert "is not valid JSON" in str(e)
    raises(board.BoardError, board.parse, [1, 2], "board.json", sensors)


def test_settings(workdir):
    s = board.load_settings(workdir + "/none.json")  # no file: defaults (the unix board has no Wi-Fi)
    assert s.ssid is None and s.agentconfig == "agentconfig.json" and s.ca is None  # None: certs/*.der
    doc = {"wifi": {"ssid": "plant-3", "password": "hunter2-secret"}, "ca": "digicert.der",
           "ntp_host": "ntp.plant", "proxy": "http://10.0.0.1:3128"}
    s = board.parse_settings(doc)
    assert (s.ssid, s.password, s.ca, s.ntp_host, s.proxy) == (
        "plant-3", "hunter2-secret", ["digicert.der"], "ntp.plant", "http://10.0.0.1:3128")
    assert "hunter2" not in repr(s)
    doc["wifi"]["password"] = 1234
    doc["ca"] = []
    e = raises(board.BoardError, board.parse_settings, doc)
    assert len(e.problems) == 2 and "wifi.password must be a string" in e.problems[0]
    assert "ca must list" in e.problems[1]
    e = raises(board.BoardError, board.parse_settings, {"wifi": {"ssid": "", "password": "hunter2-secret"}})
    assert "wifi.ssid must be a non-empty string" in str(e) and "hunter2" not in str(e)


def test_scaled_schedule():
    b, _ = nodecfg.from_docs(board.load(ROOT + "/boards/unix/board.json", sensors), None)
    assert b.speed == 60
    nodecfg.scaled(b, 60)
    assert b.sample_ms == 1000 and b.upload_ms == 10000 and b.min_deep_ms == 33
    assert b.watchdog_ms == 60000  # the watchdog is real time


def test_hardware_over_fake_modules():
    import esp32
    import network
    import ntptime

    machine.reset_sim(reset_cause=machine.WDT_RESET)
    hw = rhw.Hardware(machine, network, ntptime, esp32, machine.sim.time)
    assert hwcold.reset_cause(hw) == "WDT_RESET"
    assert hwcold.reset_cause(rhw.Hardware(machine, reset_cause="DEEPSLEEP_RESET")) == "DEEPSLEEP_RESET"
    assert hwcold.start_watchdog(hw, 30000) and machine.sim.wdt.timeout == 30000
    hw.feed()
    assert machine.sim.wdt_feeds == 1 and hw.feeds == 1
    hw.set_rtc_memory(b"hint")
    assert hw.rtc_memory() == b"hint"
    assert hwcold.set_time(hw, 1790000000)
    assert machine.sim.time.device_ms() == 1790000000000
    assert machine.RTC().datetime()[:7] == (2026, 9, 21, 0, 14, 13, 20)
    fired = []
    assert hwcold.timer(hw, 1000, fired.append) is not None
    hw.sleep_ms(2500)
    assert len(fired) == 2
    e = raises(machine.DeepSleep, hw.deepsleep, 5000)
    assert e.ms == 5000 and machine.sim.deepsleeps == [5000]
    machine.sim.pins[0] = 0
    assert hwcold.pin_low(hw, 0) and not hwcold.pin_low(hw, 9)
    bus1 = hw.i2c({"id": 0, "scl": 22, "sda": 21})
    assert hw.i2c({"id": 0, "scl": 22, "sda": 21}) is bus1


def test_hardware_detect_and_cold_calls_release_their_module():
    hw = compat.call_cold("runtime.hwcold", "detect", "SOFT_RESET")
    assert isinstance(hw, rhw.Hardware)
    assert compat.call_cold("runtime.hwcold", "reset_cause", hw) == "SOFT_RESET"
    assert not compat.MICROPYTHON or "runtime.hwcold" not in sys.modules


def test_hardware_without_board_modules():
    hw = rhw.Hardware()  # like the Unix port: no WDT, RTC, deepsleep, Timer
    assert hwcold.reset_cause(hw) == "PWRON_RESET"
    assert not hwcold.start_watchdog(hw, 60000)
    hw.feed()
    assert hwcold.timer(hw, 1000, print) is None and not hwcold.set_time(hw, 1790000000)
    e = raises(rhw.DeepSleep, hw.deepsleep, 1234)
    assert e.ms == 1234
    hw.set_rtc_memory(b"abc")
    assert hw.rtc_memory() == b"abc"  # kept in the process, as RTC memory is across deep sleep


def _walk_py(path, rel=""):
    out = []
    for entry in os.listdir(path):
        full = path + "/" + entry
        name = rel + entry
        if entry == "__pycache__":
            continue
        if os.stat(full)[0] & 0x4000:
            out += _walk_py(full, name + "/")
        elif entry.endswith(".py"):
            out.append(name)
    return out


def _run_manifest(path):
    """Execute a manifest.py with the freeze commands recorded instead of performed: (command, name, the
    directory its paths are relative to); a local include() is followed, relative to its own file."""
    calls = []
    here = path.rsplit("/", 1)[0]

    def include(p):
        if p.startswith("$("):
            calls.append(("include", p, here))
        else:
            calls.extend(_run_manifest(here + "/" + p))

    env = {
        "include": include,
        "package": lambda p, files=None, base_path=".": calls.append(("package", p, here + "/" + base_path)),
        "module": lambda p, base_path=".": calls.append(("module", p, here + "/" + base_path)),
    }
    exec(_read(path), env)
    return calls


def test_manifests_freeze_the_whole_firmware():
    fw = sorted(_walk_py(ROOT + "/firmware"))
    for name in BOARDS:
        mdir = ROOT + "/boards/" + name
        calls = _run_manifest(mdir + "/manifest.py")
        assert calls[0][0] == "include" and calls[0][1].startswith("$(PORT_DIR)/"), calls
        covered = []
        for call in calls[1:]:
            base = call[2]
            if call[0] == "package":
                covered += [call[1] + "/" + f for f in _walk_py(base + "/" + call[1])]
            else:
                os.stat(base + "/" + call[1])
                covered.append(call[1])
        assert sorted(covered) == fw, (name, sorted(covered), fw)


def test_unix_flash_image(workdir):
    if not hasattr(os, "VfsLfs2"):
        raise Skip("littlefs images need the MicroPython Unix port")
    img = workdir + "/flash.img"
    dev = flashimage.mount_image(img, "/flash", 64)
    assert dev.created
    try:
        with open("/flash/board.json", "w") as f:
            f.write("{}")
        os.mkdir("/flash/node")
        st = os.statvfs("/flash")
        assert st[0] == 4096 and st[2] == 64
    finally:
        dev.close()  # unmounts it
    assert os.stat(img)[6] == 64 * 4096
    for blocks in (64, 512):  # remounts the same bytes; an image keeps the size it was made with (a run
        dev = flashimage.mount_image(img, "/flash", blocks)  # without --board passes the default, 512)
        try:
            assert not dev.created and dev.blocks == 64
            assert sorted(os.listdir("/flash")) == ["board.json", "node"]
        finally:
            dev.close()
    with open(workdir + "/junk.img", "wb") as f:
        f.write(b"\x00" * 4096 * 16)
    e = raises(OSError, flashimage.mount_image, workdir + "/junk.img", "/flash", 16)
    assert "does not mount as littlefs" in str(e)


def test_node_json_boots_without_the_validator(workdir):
    """What deploy installs (node.json compiled on the host from the same bytes) is read as it is: the
    validator's bytecode never loads on the board. Edit board.json afterwards and node.json is remade."""
    import sys

    with open(ROOT + "/boards/unix/board.json", "rb") as f:
        text = f.read()
    with open(workdir + "/board.json", "wb") as f:
        f.write(text)
    doc = board.compile(board.parse(json.loads(text), "board.json", sensors), board.parse_settings({}),
                        nodecfg.digest(text, None))
    with open(workdir + "/node.json", "w") as f:
        f.write(json.dumps(doc))
    compat.unload("mcagent.board")
    sys.modules.pop("mcagent.board", None)
    b, s = nodecfg.load(workdir + "/board.json", workdir + "/settings.json", workdir + "/node.json")
    assert "mcagent.board" not in sys.modules
    assert b.dsc["configurationId"] == "CF-unix" and b.sensors[0]["points"][0] == ["DP-AirTemperature",
                                                                                   "temperature", "DOUBLE"]
    assert b.sample_ms == 60000 and b.sleep == "deep" and s.state_dir == "agent-state"
    with open(workdir + "/board.json", "wb") as f:  # edited on the board: compiled again, once
        f.write(text.replace(b'"sample_s": 60', b'"sample_s": 30'))
    b, s = nodecfg.load(workdir + "/board.json", workdir + "/settings.json", workdir + "/node.json")
    assert b.sample_ms == 30000
    with open(workdir + "/node.json") as f:
        assert json.loads(f.read())["sample_ms"] == 30000
    with open(workdir + "/board.json", "wb") as f:
        f.write(b'{"board": "x"}')
    e = raises(board.BoardError, nodecfg.load, workdir + "/board.json", workdir + "/settings.json",
               workdir + "/node.json")
    assert "sensors" in str(e)


