# Freeze mcagent into a MicroPython Unix port build (optional: the unix board normally runs the firmware
# straight from firmware/ with MICROPYPATH, which is what `make demo` does).
#   make -C ports/unix VARIANT=standard FROZEN_MANIFEST=/path/to/mcagent/boards/unix/manifest.py
# Relative paths are relative to the manifest that names them. The Unix port does not run main.py by
# itself: start the node with `micropython -X heapsize=100k firmware/main.py --flash flash.img ...`
# (see docs/boards.md).
include("$(PORT_DIR)/variants/manifest.py")
include("../manifest_mcagent.py")  # mcagent, sensors, runtime and main.py, shared by every board
