"""Simulated sensor for the unix board and demos: a value is a pure function of its timestamp.

Each point of a "sim" sensor describes its own signal (all optional): base + amplitude * sin(2 pi (t +
phase_s) / period_s) + noise * (deterministic pseudo-random in [-1, 1]), rounded to `decimals`; or
`cycle`: a list of values, one per period_s. Because value_at() depends only on (point, t_ms, seed), a
test or the demo can recompute exactly what the node recorded for any timestamp and compare it with what
the service stored.
"""

import math

from sensors import number

CHANNELS = None  # any channel name: each point defines its signal


def check(spec, chip, where, problems):
    number(spec, "seed", where, problems, 1, 0, 2147483647, whole=True)
    points = spec.get("points")
    if not isinstance(points, list):
        return
    seen = []
    for i in range(len(points)):
        p = points[i]
        if not isinstance(p, dict):
            continue
        w = "%s.points[%d]" % (where, i)
        ch = p.get("channel")
        if ch in seen:  # read() gives one value per channel: two points on one would both record it
            problems.append("%s.channel %r is used twice in this sensor: give each point its own" % (w, ch))
        seen.append(ch)
        number(p, "base", w, problems, 0)
        number(p, "amplitude", w, problems, 0)
        number(p, "period_s", w, problems, 3600, 0.001)
        number(p, "phase_s", w, problems, 0)
        number(p, "noise", w, problems, 0, 0)
        number(p, "decimals", w, problems, 2, 0, 9, whole=True)
        cycle = p.get("cycle")
        if cycle is not None and (not isinstance(cycle, list) or not cycle):
            problems.append("%s.cycle must be a non-empty list of values" % w)


def _mix(seed, name, t_ms):
    """A deterministic pseudo-random number in [-1, 1] for (seed, channel, t_ms)."""
    h = seed & 0x7FFFFFFF
    for ch in name:
        h = (h * 31 + ord(ch)) & 0x7FFFFFFF
    x = (h ^ (t_ms & 0x7FFFFFFF) ^ ((t_ms >> 31) * 0x5BD1E995)) & 0x7FFFFFFF
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    x = (x ^ (x >> 13)) & 0x7FFFFFFF
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return ((x >> 8) % 20001 - 10000) / 10000


def value_at(point, t_ms, seed=1):
    """The simulated value of one point (a board.json point dict) at Unix time t_ms."""
    period_ms = point.get("period_s", 3600) * 1000
    cycle = point.get("cycle")
    if cycle:
        return cycle[int(t_ms // period_ms) % len(cycle)]
    t = t_ms + point.get("phase_s", 0) * 1000
    x = point.get("base", 0)
    amp = point.get("amplitude", 0)
    if amp:
        x += amp * math.sin(2 * math.pi * ((t % period_ms) / period_ms))
    noise = point.get("noise", 0)
    if noise:
        x += noise * _mix(seed, point.get("channel", ""), int(t_ms))
    return round(x, int(point.get("decimals", 2)))


class Driver:
    def __init__(self, spec, hw=None):
        self.seed = spec.get("seed", 1)
        self.points = spec.get("points", [])

    def read(self, t_ms):
        out = {}
        for p in self.points:
            out[p["channel"]] = value_at(p, t_ms, self.seed)
        return out
