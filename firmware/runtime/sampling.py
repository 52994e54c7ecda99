"""Sampling: the sensor drivers read, their values converted to the data points' types and recorded to flash
(or held in RAM while the clock is unknown). One broken sensor never stops the others.

Loaded while a cycle samples and released before its upload (the heap peak of a wake): see runtime.node.
"""

from micropython import const

from mcagent import compat

_PENDING_MAX = const(24)  # samples held in RAM while the clock is unknown


def init_sensor(node, slot):
    from sensors import module

    s = slot.spec
    try:
        slot.driver = module(s["kind"]).Driver(s["spec"], node.hw)
    except Exception as e:
        node.st["sensor_errors"] += 1
        sensor_failed(node, slot, e)
    return slot.driver


def release_sensors(node):
    """Drop the drivers and their modules: a node that deep-sleeps samples once per wake, and the upload
    after the sample is the wake's heap peak (next cycle, init_sensor makes them again)."""
    for slot in node.sensors:
        if slot.driver is not None:
            slot.driver = None
            compat.unload("sensors." + slot.spec["kind"])
    compat.unload("sensors")
    if node.board.sensors is None:  # read from node.json for this sample (runtime.wake): drop them again
        node.sensors = []


def sensor_slots(node):
    """A runtime.node.SensorSlot per sensor; read from node.json when the boot left them there."""
    if not node.sensors and node.board.sensors is None:
        from runtime.node import SensorSlot

        node.sensors = [
            SensorSlot(s)
            for s in compat.call_cold("runtime.nodecfg", "part", node.board.node_json, "sensors")
        ]
    return node.sensors


def sensor_failed(node, slot, exc):
    """Console once per boot; run log only after a cold boot (a dead sensor on a node that wakes every
    minute must not write the flash every minute). The health event carries the count."""
    if slot.failed:
        return
    slot.failed = True
    if node.cold:
        node.note("sensor " + slot.spec["name"], exc)
    node.log("sensor %s failed: %s" % (slot.spec["name"], exc))


def sample(node, now):
    from sensors import convert

    values = {}
    st = node.st
    for slot in sensor_slots(node):
        s, driver = slot.spec, slot.driver
        if driver is None:
            driver = init_sensor(node, slot)
            if driver is None:
                continue
        try:
            got = driver.read(now)
        except Exception as e:  # one broken sensor must not stop the others
            st["sensor_errors"] += 1
            sensor_failed(node, slot, e)
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
    if node.board.sleep == "deep":  # read: the drivers' code goes before the store opens (a wake's peak)
        release_sensors(node)
    if node.clock.is_sane():
        record(node, values, now)
    else:
        node.pending.append([now, values])
        if len(node.pending) > _PENDING_MAX:
            node.pending.pop(0)
            st["dropped"] += 1


def record(node, values, ts):
    """record() the sample. A value the store refuses (StoreError naming it: an INT past 2^31, a STRING past
    255 characters, a TIMESTAMP that is no time) is dropped and counted as a sensor error, not the sample:
    one bad point must not cost the other sensors' readings, every cycle. A sample the flash cannot take
    (OSError: full, failing) is counted in `dropped` (the health event reports it); the cycle goes on. One the
    heap cannot take (MemoryError) is counted there too, and raised: the cycle logs it as unexpected."""
    while True:
        try:
            node.agent.record(values, timestamp_ms=ts)
            node.st["recorded"] += 1
            return
        except OSError as e:  # the flash is full (another writer took it) or failing: counted, not raised
            node.st["dropped"] += 1
            node.log("sample not recorded (%r): dropped" % (e,))
            return
        except MemoryError:  # the reading is lost: counted with the dropped ones, and an error all the same
            node.st["dropped"] += 1
            raise
        except ValueError as e:  # StoreError: nothing was written
            bad = getattr(e, "dp_id", None)
            if bad not in values:
                raise
            del values[bad]
            node.st["sensor_errors"] += 1
            node.log("%s dropped: %s" % (bad, e))
            if not values:
                return


def record_pending(node):
    """Record the samples held while the clock was unknown, now that it is known."""
    pending = node.pending
    node.pending = []
    for ts, values in pending:
        record(node, values, ts)
    node.log("recorded %d samples taken before the clock was known" % len(pending))
