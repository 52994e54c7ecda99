# MicroPython script (run by mcagent_tools.fit, not imported by the host): heap each module costs to import.
# argv[1]: a file with one module name per line (a file: this Unix port dies on an argument > ~256 bytes).
import gc
import sys

with open(sys.argv[1]) as f:
    names = f.read().split()
for name in names:
    gc.collect()
    before = gc.mem_free()
    __import__(name)
    gc.collect()
    print(name, before - gc.mem_free())
