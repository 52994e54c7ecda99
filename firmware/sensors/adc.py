"""One analog input on ADC1, as a voltage (optionally scaled, e.g. behind a divider) and a raw count.

ADC2 cannot be read while Wi-Fi is on, so board.json must name an ADC1 pin: GPIO 32-39 on the ESP32,
1-10 on the S2/S3, 0-4 on the C3. read_uv() uses the chip's calibration where the port has it; the
fallback from read_u16() assumes the nominal full scale of the attenuation.
"""

from sensors import SensorError, number

CHANNELS = {"voltage": ("DOUBLE", "V"), "raw": ("INT", "")}

ADC1_PINS = {"esp32": (32, 39), "esp32s2": (1, 10), "esp32s3": (1, 10), "esp32c3": (0, 4)}
# attenuation -> (machine.ADC constant, nominal full scale in microvolts)
_ATTEN = {
    "0dB": ("ATTN_0DB", 950000),
    "2.5dB": ("ATTN_2_5DB", 1250000),
    "6dB": ("ATTN_6DB", 1750000),
    "11dB": ("ATTN_11DB", 2450000),
}


def check(spec, chip, where, problems):
    pin = spec.get("pin")
    if isinstance(pin, bool) or not isinstance(pin, int):
        problems.append("%s.pin must be the GPIO number of an ADC1 pin, got %r" % (where, pin))
    else:
        span = ADC1_PINS.get(chip)
        if span is not None and not span[0] <= pin <= span[1]:
            problems.append(
                "%s.pin: GPIO %d is not on ADC1 of the %s (use GPIO %d-%d; "
                "ADC2 stops working while Wi-Fi is on)" % (where, pin, chip, span[0], span[1])
            )
    atten = spec.get("atten", "11dB")
    if atten not in _ATTEN:
        problems.append("%s.atten must be one of 0dB, 2.5dB, 6dB, 11dB, got %r" % (where, atten))
    number(spec, "scale", where, problems, 1, -1e6, 1e6)
    number(spec, "offset", where, problems, 0, -1e6, 1e6)
    number(spec, "samples", where, problems, 4, 1, 64, whole=True)


class Driver:
    def __init__(self, spec, hw):
        m = hw.machine
        if m is None or not hasattr(m, "ADC"):
            raise SensorError("adc: this port has no machine.ADC")
        name, self._full_uv = _ATTEN[spec.get("atten", "11dB")]
        self.adc = m.ADC(m.Pin(spec["pin"]), atten=getattr(m.ADC, name))
        self.scale = spec.get("scale", 1)
        self.offset = spec.get("offset", 0)
        self.samples = int(spec.get("samples", 4))
        self._uv = getattr(self.adc, "read_uv", None)

    def read(self, t_ms=None):
        n = self.samples
        uv = 0
        raw = 0
        for _ in range(n):
            r = self.adc.read_u16()
            raw += r
            uv += self._uv() if self._uv else r * self._full_uv // 65535
        volts = uv / n / 1000000
        return {"voltage": round(volts * self.scale + self.offset, 4), "raw": raw // n}
