"""The MCU's internal temperature sensor.

ESP32-S2/S3/C3/C6 have a calibrated sensor: esp32.mcu_temperature() in degrees Celsius. The classic ESP32
only has esp32.raw_temperature(), in degrees Fahrenheit and uncalibrated (it reads the die, tens of
degrees above the air): give an "offset" in board.json if you want it closer to the room.
"""

from sensors import SensorError, number

CHANNELS = {"temperature": ("DOUBLE", "°C")}


def check(spec, chip, where, problems):
    if chip == "unix":
        problems.append("%s: the unix board has no MCU temperature sensor (use kind \"sim\")" % where)
    number(spec, "offset", where, problems, 0, -100, 100)


class Driver:
    def __init__(self, spec, hw):
        esp32 = hw.esp32
        if esp32 is None:
            raise SensorError("mcu_temp: this port has no esp32 module")
        self._celsius = getattr(esp32, "mcu_temperature", None)
        self._fahrenheit = None if self._celsius else getattr(esp32, "raw_temperature", None)
        if self._celsius is None and self._fahrenheit is None:
            raise SensorError("mcu_temp: esp32 has neither mcu_temperature() nor raw_temperature()")
        self.offset = spec.get("offset", 0)

    def read(self, t_ms=None):
        if self._celsius is not None:
            c = self._celsius()
        else:
            c = (self._fahrenheit() - 32) / 1.8
        return {"temperature": round(c + self.offset, 1)}
