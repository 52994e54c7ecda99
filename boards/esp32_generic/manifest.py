# Freeze mcagent into a custom MicroPython firmware for this board: the bytecode then runs from flash and
# costs no RAM (compiling .py on the board takes several times the source size in heap: a 3.5 KB module
# needed ~15 KB to import as .py, ~4 KB as .mpy, 0 frozen).
# From a MicroPython checkout (v1.23 or newer), with ESP-IDF set up:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/mcagent/boards/esp32_generic/manifest.py
# Relative paths are relative to the manifest that names them. The frozen main.py runs at boot and takes
# precedence over a main.py on the filesystem (MicroPython looks for a frozen one first); to stop it,
# create a file named STOP on the board or hold the board.json "safe" pin low at reset.
include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules (_boot, ntptime, ...)
include("../manifest_mcagent.py")  # mcagent, sensors, runtime and main.py, shared by every board
