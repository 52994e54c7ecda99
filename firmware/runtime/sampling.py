"""Sampling: the sensor drivers read, their values converted to the data points' types and recorded to flash
(or held in RAM while the clock is unknown). One broken sensor never stops the others.

Loaded while a cycle samples and released before its upload (the heap peak of a wake): see runtime.node.
"""

from micropython import const

from mcagent import compat

_PENDING_MAX = const(24)  # samples held in RAM while the clock is unknown


def init_sensor(node, entry):
    from sensors import module

    s = entry[0]
    try:
        entry[1] = module(s["kind"]).Driver(s["spec"], node.hw)
    except Exception as e:
        node.st["sensor_errors"] += 1
        sensor_failed(node, entry, e)
    return entry[1]


def release_sensors(node):
    """Drop the drivers and their modules: a node that deep-sleeps samples once per wake, and the upload
    after the sample is the wake's heap peak (next cycle, init_sensor makes them again)."""
    for entry in node.sensors:
        if entry[1] is not None:
            entry[1] = None
            compat.unload("sensors." + entry[0]["kind"])
    compat.unload("sensors")
    if node.board.sensors is None:  # read from node.json for this sample (runtime.wake): drop them again
        node.sensors = []


def sensor_entries(node):
    """[sensor, driver, failure logged] per sensor; read from node.json when the boot left them there."""
    if not node.sensors and node.board.sensors is None:
        node.sensors = [[s, None, False] for s in compat.call_cold("runtime.nodecfg", "part",
                                                                   node.board.node_json, "sensors")]
    return node.sensors


def sensor_failed(node, entry, exc):
    """Console once per boot; run log only after a cold boot (a dead sensor on a node that wakes every
    minute must not write the flash every minute). The health event carries the count."""
    if entry[2]:
        return
    entry[2] = True
    if node.cold:
        node.note("sensor " + entry[0]["name"], exc)
    node.log("sensor %s failed: %s" % (entry[0]["name"], exc))


def sample(node, now):
    from sensors import convert

    values = {}
    st = node.st
    for entry in sensor_entries(node):
        s, driver = entry[0], entry[1]
        if driver is None:
            driver = init_sensor(node, entry)
            if driver is None:
                continue
        try:
            got = driver.read(now)
        except Exception as e:  # one broken sensor must not stop the others
            st["sensor_errors"] += 1
            sensor_failed(node, entry, e)
            continue
        for pid, channel, typ in s["points"]:
            v = got.get(channel)
            if v is None:
                continue
            try:
                values[pid] = convert(typ, v)
            except (TypeError, ValueError):
                st["sensor_errors"] += 1
    if not values:
        return
    st["taken"] += 1
    st["samples"] += 1
    node.last_values = values
    node.last_ts = now
    if node.clock.is_sane():
        node.agent.record(values, timestamp_ms=now)
        st["recorded"] += 1
    else:
        node.pending.append([now, values])
        if len(node.pending) > _PENDING_MAX:
            node.pending.pop(0)
            st["dropped"] += 1


def record_pending(node):
    """Record the samples held while the clock was unknown, now that it is known."""
    pending = node.pending
    node.pending = []
    for ts, values in pending:
        node.agent.record(values, timestamp_ms=ts)
        node.st["recorded"] += 1
    node.log("recorded %d samples taken before the clock was known" % len(pending))
