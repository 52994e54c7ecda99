# Fake of MicroPython's `esp32` module (only what the firmware uses), for host tests.
# mcu_temperature() is the S2/S3/C3 sensor in degrees C; raw_temperature() the classic ESP32's, in F.


class _Sim:
    pass


sim = _Sim()


def reset_sim(celsius=41.5):
    sim.celsius = celsius
    sim.reads = 0
    return sim


reset_sim()


def mcu_temperature():
    sim.reads += 1
    return int(round(sim.celsius))


def raw_temperature():
    sim.reads += 1
    return int(round(sim.celsius * 1.8 + 32))
