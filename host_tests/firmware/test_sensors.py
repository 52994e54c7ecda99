"""Sensor drivers against the fakes: BME280 register protocol and datasheet compensation, ADC1 scaling,
the MCU temperature on S3/C3 and classic ESP32, and the deterministic simulator."""

import json

import esp32
import machine

import sensors
from checks import raises
from runtime import hw as rhw
from sensors import SensorError, adc, bme280, mcu_temp, sim

ROOT = __file__.rsplit("/", 3)[0]
CAL = machine.BME280Model.DEFAULT_CAL


def _hw():
    machine.reset_sim()
    esp32.reset_sim()
    return rhw.Hardware(machine, None, None, esp32, machine.sim.time)


def _float_reference(adc_t, adc_p, adc_h, c):
    """The datasheet's double-precision formulas (BME280 section 8.1), independent of the driver."""
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6 = c
    v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    v2 = (adc_t / 131072.0 - t1 / 8192.0) * (adc_t / 131072.0 - t1 / 8192.0) * t3
    t_fine = v1 + v2
    temp = t_fine / 5120.0
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * p6 / 32768.0
    v2 = v2 + v1 * p5 * 2.0
    v2 = v2 / 4.0 + p4 * 65536.0
    v1 = (p3 * v1 * v1 / 524288.0 + p2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * p1
    p = 1048576.0 - adc_p
    p = (p - v2 / 4096.0) * 6250.0 / v1
    v1 = p9 * p * p / 2147483648.0
    v2 = p * p8 / 32768.0
    p = p + (v1 + v2 + p7) / 16.0
    h = t_fine - 76800.0
    scale = h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h))
    h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h)) * scale
    h = h * (1.0 - h1 * h / 524288.0)
    return temp, p / 100.0, min(100.0, max(0.0, h))


def test_bme280_compensation_matches_datasheet_example():
    # BMP280 datasheet example (section 3.12): adc_T = 519888 -> t_fine 128422, 25.08 degC; adc_P = 415148
    # -> 100653.27 Pa with the floating-point formulas.
    t_fine, t = bme280.compensate_t(519888, CAL)
    assert (t_fine, t) == (128422, 2508)
    p = bme280.compensate_p(415148, t_fine, CAL)
    assert abs(p / 256 - 100653.27) < 0.1, p / 256
    ref = _float_reference(519888, 415148, 30000, CAL)
    assert abs(ref[0] - 25.08) < 0.01 and abs(ref[1] - 1006.5327) < 0.001
    h = bme280.compensate_h(30000, t_fine, CAL) / 1024
    assert abs(h - ref[2]) < 0.05, (h, ref[2])


def test_bme280_integer_formulas_track_float_formulas_over_the_range():
    cal = (28000, 26500, 50, 36000, -10600, 3000, 6000, -30, -7, 9900, -10230, 4285, 75, 360, 0, 330, 0, 30)
    for adc_t in (400000, 480000, 519888, 560000):
        for adc_p in (250000, 330000, 415148, 500000):
            for adc_h in (15000, 26000, 33000):
                t_fine, t = bme280.compensate_t(adc_t, cal)
                p = bme280.compensate_p(adc_p, t_fine, cal) / 25600
                h = bme280.compensate_h(adc_h, t_fine, cal) / 1024
                rt, rp, rh = _float_reference(adc_t, adc_p, adc_h, cal)
                assert abs(t / 100 - rt) < 0.011, (adc_t, t, rt)
                assert abs(p - rp) < 0.02, (adc_t, adc_p, p, rp)
                assert abs(h - rh) < 0.1, (adc_h, h, rh)
    assert bme280.compensate_h(0, 128422, cal) == 0  # clamped, never negative


def test_bme280_calibration_layout_with_negative_values():
    cal = CAL[:15] + (-50, -3, -20)
    model = machine.BME280Model(cal=cal)
    got = bme280.parse_calibration(model.read(0x88, 26), model.read(0xE1, 7))
    assert got == cal, got


def test_bme280_driver_over_fake_i2c():
    hw = _hw()
    dev = machine.BME280Model(busy_polls=3)
    machine.sim.i2c_devices[0x76] = dev
    spec = {"i2c": {"id": 0, "scl": 22, "sda": 21}}
    d = bme280.Driver(spec, hw)
    assert dev.resets == 1
    writes = [w for w in dev.writes if w[0] != 0xE0]
    assert writes == [(0xF5, 0x00)], writes
    before = machine.sim.time.ticks
    got = d.read()
    # ctrl_hum before every ctrl_meas that applies it (a chip that reset since keeps measuring humidity);
    # osrs_t = osrs_p = x1, forced mode
    assert dev.writes[-2:] == [(0xF2, 0x01), (0xF4, 0x25)]
    assert machine.sim.time.ticks - before >= 10  # waited the datasheet's measurement time
    assert got["temperature"] == 25.08
    assert got["pressure"] == 1006.53  # rounded in integers: the same on every interpreter
    assert got["humidity"] == 55.0
    dev.raw = (519888, 415148, 0x8000)  # humidity channel skipped by the chip
    assert "humidity" not in d.read()
    assert dev.measurements == 2


def test_bme280_options_and_errors():
    hw = _hw()
    dev = machine.BME280Model()
    machine.sim.i2c_devices[0x77] = dev
    d = bme280.Driver({"i2c": {"scl": 22, "sda": 21}, "address": 0x77, "oversampling": 4,
                       "temperature_offset": -1.5}, hw)
    got = d.read()
    assert dev.writes[-2:] == [(0xF2, 3), (0xF4, (3 << 5) | (3 << 2) | 1)]
    assert got["temperature"] == 23.58
    e = raises(SensorError, bme280.Driver, {"i2c": {"scl": 22, "sda": 21}, "address": 0x76}, hw)
    assert "0x76 does not answer on I2C" in str(e)
    machine.sim.i2c_devices[0x76] = machine.BME280Model(chip_id=0x58)
    e = raises(SensorError, bme280.Driver, {"i2c": {"scl": 22, "sda": 21}}, hw)
    assert "is a BMP280" in str(e)
    machine.sim.i2c_devices[0x76] = machine.BME280Model(chip_id=0x99)
    assert "chip id 0x99" in str(raises(SensorError, bme280.Driver, {"i2c": {"scl": 22, "sda": 21}}, hw))
    stuck = machine.BME280Model(busy_polls=1000)
    machine.sim.i2c_devices[0x76] = stuck
    d = bme280.Driver({"i2c": {"scl": 22, "sda": 21}}, hw)
    assert "never finished" in str(raises(SensorError, d.read))
    gone = bme280.Driver({"i2c": {"scl": 22, "sda": 21}, "address": 0x77}, hw)
    del machine.sim.i2c_devices[0x77]  # unplugged after start-up
    assert "0x77 does not answer" in str(raises(SensorError, gone.read))


def test_adc_scaled_voltage():
    hw = _hw()
    machine.sim.adc_uv[35] = 1850000
    d = adc.Driver({"pin": 35, "atten": "11dB", "scale": 2.0, "samples": 4}, hw)
    got = d.read()
    assert got["voltage"] == 3.7 and got["raw"] == 1850000 * 65535 // 2450000
    assert d.adc.reads == 4
    d = adc.Driver({"pin": 35, "atten": "0dB", "offset": 0.1, "samples": 1}, hw)
    assert d.read()["voltage"] == 1.05  # clipped at the 0 dB full scale (0.95 V), plus the offset


def test_adc_without_calibration_uses_nominal_full_scale():
    class NoUv(machine.ADC):
        read_uv = None

    class M:
        Pin = machine.Pin
        ADC = NoUv

    class HW:
        machine = M

    _hw()
    machine.sim.adc_uv[34] = 1225000
    d = adc.Driver({"pin": 34, "atten": "11dB"}, HW())
    assert abs(d.read()["voltage"] - 1.225) < 0.001


def test_mcu_temperature_s3_and_classic_esp32():
    hw = _hw()
    esp32.reset_sim(celsius=43.0)
    assert mcu_temp.Driver({}, hw).read() == {"temperature": 43.0}

    class Classic:  # the classic ESP32 has only raw_temperature(), in Fahrenheit
        raw_temperature = staticmethod(esp32.raw_temperature)

    class HW:
        esp32 = Classic()

    esp32.reset_sim(celsius=45.0)  # 113 F
    assert mcu_temp.Driver({"offset": -20}, HW()).read() == {"temperature": 25.0}

    class Bare:
        esp32 = None

    assert "no esp32 module" in str(raises(SensorError, mcu_temp.Driver, {}, Bare()))


def test_simulator_is_a_pure_function_of_time():
    with open(ROOT + "/boards/unix/board.json") as f:
        spec = json.loads(f.read())["sensors"][0]
    d = sim.Driver(spec)
    a = d.read(1790000000000)
    assert a == d.read(1790000000000) and a != d.read(1790000060000)
    # the same numbers on CPython and MicroPython (the demo recomputes them on the host)
    assert a == {"temperature": 19.28, "humidity": 35.9, "pressure": 1009.4}, a
    assert d.read(1790003600123)["pressure"] == 1009.61
    for t in range(1790000000000, 1790000000000 + 86400000, 3600000):
        v = sim.value_at(spec["points"][0], t, 7)
        assert 21.0 - 3.2 <= v <= 21.0 + 3.2
    p = {"channel": "door", "cycle": [False, True, True], "period_s": 60}
    assert [sim.value_at(p, t * 60000) for t in range(4)] == [False, True, True, False]
    assert sim.value_at({"channel": "x", "base": 5}, 123) == 5


def test_driver_registry():
    assert sensors.module("bme280") is bme280 and sensors.module("sim") is sim
    raises(ValueError, sensors.module, "dht22")
    for kind in sensors.KINDS:
        m = sensors.module(kind)
        assert hasattr(m, "Driver") and hasattr(m, "check") and hasattr(m, "CHANNELS")
