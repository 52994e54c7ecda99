"""The unix board's power cycles: boot the node, and when it deep-sleeps (runtime.hw.DeepSleep), wait and boot
it again as a deep-sleep wake, until the run's cycle or time limit (or, with `one_wake`, run a single wake
from deep sleep and end when the node sleeps again). Small, as it stays loaded for the run; the command
line (runtime.unix) is released before it starts.
"""

import json
import os
import time

from mcagent import compat


class Session:
    """One run of the unix board: the node's files mounted (dev: the flash image's block device, or None),
    the node's configuration, the run's limits. end() unmounts and returns to the directory it started in."""

    def __init__(self, here, dev):
        self.here = here
        self.dev = dev
        self.board = self.settings = None
        self.quiet = False
        self.one_wake = False  # the run is one wake from deep sleep (--wake): it ends when the node sleeps
        self.argv = None  # ... its command line, whose flash's RTC memory file it reads (runtime.unixrtc)
        self.node = None  # the node of the wake that runs (the summary's, when a wake ends in deep sleep)
        self.limit_ms = self.max_cycles = None
        self.start = compat.ticks_ms(time)
        self.cycles = 0
        self.seen = 0  # cycles of self.node counted

    def elapsed_ms(self):
        return compat.ticks_diff(compat.ticks_ms(time), self.start, time)

    def stop(self, node):
        """The node's stop() callback: True once the run's cycles or seconds are used up, else the ms left
        (a node that waits awake does not wait past the end of the run) or None."""
        if node is not self.node:  # a new boot: its cycles count from 0
            self.node = node
            self.seen = 0
        self.cycles += node.cycles - self.seen  # an upload wake's boot adds none: its cycle began before
        self.seen = node.cycles
        if self.max_cycles and self.cycles >= self.max_cycles:
            return True
        if self.limit_ms is None:
            return None
        left = self.limit_ms - self.elapsed_ms()
        return True if left <= 0 else left

    def run(self, run, agent_factory=None, up=None):
        """Boot the node (main.run) until the run ends; up: the first boot's upload wake, done already
        (main.upload_wake)."""
        from runtime.hw import DeepSleep, Hardware

        compat.call_cold("runtime.unixrtc", "power_on", self.argv, self.here)
        log = (lambda m: None) if self.quiet else None
        cause = "DEEPSLEEP_RESET" if self.one_wake else None
        try:
            while True:
                hw = Hardware(reset_cause=cause or "PWRON_RESET")
                try:
                    node = run(self.board, self.settings, hw, agent_factory, stop=self.stop, log=log, up=up)
                    break
                except DeepSleep as d:
                    if self.one_wake:  # the wake is over: the node sleeps, and the run ends with it
                        node = self.node
                        break
                    ms = d.ms
                    if self.limit_ms is not None:  # do not oversleep the end of the run
                        ms = max(0, min(ms, self.limit_ms - self.elapsed_ms()))
                    node = self.node = up = None
                    compat.heap_free()  # a collection, as the sleep would leave the heap
                    compat.sleep_ms(ms, time)
                    cause = "DEEPSLEEP_RESET"
            if node is not None:
                node.release_phases()  # the cycle's code goes before the summary's comes
                print("mcagent-summary " + json.dumps(compat.call_cold("runtime.health", "summary", node)))
            return node
        finally:
            self.end()

    def end(self):
        os.chdir(self.here)
        if self.dev is not None:
            self.dev.close()  # unmounts it
            self.dev = None
