"""Bosch BME280 over I2C: temperature, pressure and humidity, in forced mode (the chip sleeps between reads).

Compensation uses the datasheet's integer formulas (BME280 datasheet rev 1.6, section 4.2.3: 32-bit for
temperature and humidity, 64-bit for pressure). MicroPython's floats are single precision on the ESP32,
which loses tenths of a hectopascal in the floating-point variant; its integers are arbitrary precision,
so the integer variant gives the datasheet's exact results on every port.
"""

import struct

from sensors import SensorError, number

CHANNELS = {"temperature": ("DOUBLE", "°C"), "pressure": ("DOUBLE", "hPa"), "humidity": ("DOUBLE", "%")}

CHIP_ID = 0x60
BMP280_ID = 0x58
_REG_ID = 0xD0
_REG_RESET = 0xE0
_REG_CTRL_HUM = 0xF2
_REG_STATUS = 0xF3
_REG_CTRL_MEAS = 0xF4
_REG_CONFIG = 0xF5
_REG_DATA = 0xF7
_OSRS = {1: 1, 2: 2, 4: 3, 8: 4, 16: 5}  # oversampling factor -> register code


def check(spec, chip, where, problems):
    addr = spec.get("address", 0x76)
    if isinstance(addr, bool) or not isinstance(addr, int) or addr not in (0x76, 0x77):  # 118.0: no address
        problems.append(
            "%s.address must be 118 (0x76, SDO low) or 119 (0x77, SDO high), got %r" % (where, addr)
        )
    if spec.get("oversampling", 1) not in _OSRS:
        problems.append("%s.oversampling must be 1, 2, 4, 8 or 16" % where)
    number(spec, "temperature_offset", where, problems, 0, -20, 20)


def _div(a, b):
    """C integer division (truncates toward zero), as the datasheet's formulas assume."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def compensate_t(adc_t, c):
    """Raw temperature -> (t_fine, temperature in 0.01 degC)."""
    t1, t2, t3 = c[0], c[1], c[2]
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    x = (adc_t >> 4) - t1
    var2 = (((x * x) >> 12) * t3) >> 14
    t_fine = var1 + var2
    return t_fine, (t_fine * 5 + 128) >> 8


def compensate_p(adc_p, t_fine, c):
    """Raw pressure -> pressure in Pa as Q24.8 (divide by 256), 0 if the calibration is unusable."""
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
    var1 = t_fine - 128000
    var2 = var1 * var1 * p6
    var2 = var2 + ((var1 * p5) << 17)
    var2 = var2 + (p4 << 35)
    var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
    var1 = (((1 << 47) + var1) * p1) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    p = _div(((p << 31) - var2) * 3125, var1)
    var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (p8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (p7 << 4)


def compensate_h(adc_h, t_fine, c):
    """Raw humidity -> relative humidity in %RH as Q22.10 (divide by 1024)."""
    h1, h2, h3, h4, h5, h6 = c[12], c[13], c[14], c[15], c[16], c[17]
    v = t_fine - 76800
    v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * (
        ((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


def parse_calibration(block1, block2):
    """Registers 0x88..0xA1 (26 bytes) and 0xE1..0xE7 (7 bytes) -> (T1..T3, P1..P9, H1..H6)."""
    c = list(struct.unpack("<HhhHhhhhhhhh", block1[:24]))
    c.append(block1[25])  # H1 at 0xA1
    h2, h3, e4, e5, e6, h6 = struct.unpack("<hBbBbb", block2)
    c.append(h2)
    c.append(h3)
    c.append((e4 << 4) | (e5 & 0x0F))  # H4: 0xE4[7:0] / 0xE5[3:0], signed 12 bit
    c.append((e6 << 4) | (e5 >> 4))  # H5: 0xE6[7:0] / 0xE5[7:4], signed 12 bit
    c.append(h6)
    return tuple(c)


class Driver:
    def __init__(self, spec, hw):
        self.hw = hw
        self.addr = spec.get("address", 0x76)
        self.bus = hw.i2c(spec.get("i2c"))
        self.t_offset = spec.get("temperature_offset", 0)
        osrs = _OSRS[spec.get("oversampling", 1)]
        factor = spec.get("oversampling", 1)
        # Datasheet 9.1: maximum measurement time for T, P and H at this oversampling.
        self.wait_ms = int(1.25 + 2.3 * factor * 3 + 0.575 * 2) + 1
        self._ctrl_meas = (osrs << 5) | (osrs << 2) | 0x01  # forced mode
        self._buf = bytearray(8)
        chip = self._read(_REG_ID, 1)[0]
        if chip == BMP280_ID:
            raise SensorError("bme280 at 0x%02x is a BMP280 (no humidity sensor)" % self.addr)
        if chip != CHIP_ID:
            raise SensorError("bme280 at 0x%02x: chip id 0x%02x, expected 0x60" % (self.addr, chip))
        self._write(_REG_RESET, 0xB6)
        hw.sleep_ms(3)
        for _ in range(10):  # wait until the NVM calibration was copied (status.im_update)
            if not self._read(_REG_STATUS, 1)[0] & 0x01:
                break
            hw.sleep_ms(2)
        self.cal = parse_calibration(self._read(0x88, 26), self._read(0xE1, 7))
        self._write(_REG_CONFIG, 0x00)  # no IIR filter: each forced read stands alone
        self._ctrl_hum = osrs  # written before each ctrl_meas (read_raw): a chip that reset keeps humidity

    def _read(self, reg, n):
        try:
            return self.bus.readfrom_mem(self.addr, reg, n)
        except OSError as e:
            raise SensorError("bme280 at 0x%02x does not answer on I2C (%r)" % (self.addr, e))

    def _write(self, reg, value):
        try:
            self.bus.writeto_mem(self.addr, reg, bytes((value,)))
        except OSError as e:
            raise SensorError("bme280 at 0x%02x does not answer on I2C (%r)" % (self.addr, e))

    def read_raw(self):
        """Trigger one forced measurement and return (adc_t, adc_p, adc_h). ctrl_hum first, every time: it
        takes effect with the ctrl_meas write, and a chip that reset since (a brown-out of the sensor alone)
        would otherwise measure no humidity and say so only with 0x8000."""
        self._write(_REG_CTRL_HUM, self._ctrl_hum)
        self._write(_REG_CTRL_MEAS, self._ctrl_meas)
        self.hw.sleep_ms(self.wait_ms)
        for _ in range(20):
            if not self._read(_REG_STATUS, 1)[0] & 0x08:
                break
            self.hw.sleep_ms(2)
        else:
            raise SensorError("bme280 at 0x%02x: measurement never finished" % self.addr)
        d = self._read(_REG_DATA, 8)
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == 0x80000 or adc_p == 0x80000:
            raise SensorError("bme280 at 0x%02x: measurement skipped (chip reset?)" % self.addr)
        return adc_t, adc_p, adc_h

    def read(self, t_ms=None):
        adc_t, adc_p, adc_h = self.read_raw()
        t_fine, t = compensate_t(adc_t, self.cal)
        out = {"temperature": round(t / 100 + self.t_offset, 2)}
        p = compensate_p(adc_p, t_fine, self.cal)
        if p:
            # Q24.8 Pa -> hPa to 0.01, rounded in integers: round() of a float tie differs between CPython
            # and MicroPython (1006.535 -> .53 or .54), and a test or the demo recomputes values on CPython
            out["pressure"] = ((p + 128) >> 8) / 100
        if adc_h != 0x8000:  # skipped: no humidity this time (ctrl_hum is written again before the next)
            out["humidity"] = ((compensate_h(adc_h, t_fine, self.cal) * 100 + 512) >> 10) / 100  # Q22.10 %
        return out
