"""mcagent: a MindConnect agent for MicroPython boards (runs on CPython too, for host tests)."""

VERSION = "0.1.0"
