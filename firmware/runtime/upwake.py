"""The upload wake: a wake from deep sleep that uploads before it does anything else.

A board whose schedule sets `upload_wake` does not upload in the wake that finds an upload due: that wake
records its sample, leaves the request in RTC memory (runtime.cycle.start; runtime.hw.MARKS) and
deep-sleeps 1 ms. The next boot runs this before `main` loads the node's runtime or its configuration
objects: Wi-Fi, the agent made from node.json, token, flush, and the agent's path released. What follows
the flush (NTP when due, the schedule after an upload, the state, the sleep) is the runtime's own code
(runtime.cycle.uploaded), run in the same boot with the flush's heap given back.

Heap: runtime.upsetup does what comes before the flush (the checks, node.json, the watchdog, Wi-Fi,
the agent, the store opened) and is released before it; this module holds only the agent's calls.

Why: a wake's heap peaks at the flush, and what is loaded before it stays there (code, and every name
it makes: MicroPython never frees a name, and the 621st allocates a pool of 640). An upload that follows
the sampling, the schedule and the node's objects in one boot needed ~80 KB of 32-bit heap; this one
holds little more than the library's own path (docs/architecture.md, "Heap").

It declines (None: the boot goes on as a usual wake, which then uploads itself) when no upload was asked,
when this is no wake from deep sleep, when the device clock is not set (TLS checks the server's
certificate dates: the usual wake runs NTP), when a STOP file or the safe pin asks the node to stay at the
REPL, and when node.json or the state cannot be read. RTC memory says TAKEN while it works: a boot after one
that did not end (a reset, a cut) uploads the usual way instead of asking again.
"""

from micropython import const

from mcagent import compat

_ANEW = const("registered anew")  # the agent had to onboard again (runtime.cycle.uploaded)


def run(hw, flash=None, root="", log=None, agent_factory=None):
    """The upload this wake was asked for: (summary, error, why, wlan, exception, Wi-Fi's failed tries,
    dev) for runtime.cycle.uploaded, or None when it declines (see above). flash: the unix board's image,
    which it mounts at root and leaves mounted for the node (dev: its block device; runtime.unix.setup
    takes it over: mounted while the heap is young, not again in the heap the upload left). agent_factory
    (node): as main.run's (tests), given an object with the node's clock.
    summary: the flush's (runtime.upload.account reads it after the flush), None if there was none;
    error "registered anew": the DSC and mappings are due, which the usual upload does."""
    got = compat.call_cold("runtime.upsetup", "begin", hw, flash, root, log, agent_factory)
    if got is None:
        return None
    agent, why, wlan, dev, budget, err, exc, tries = got
    got = None
    summary = None
    try:
        if agent is None:
            pass
        elif agent.onboard():
            err = _ANEW
        else:
            agent.token()
            hw.guard(budget + 60000)  # the flush gets its whole budget, whatever Wi-Fi took
            summary = agent.flush()
            release = getattr(agent, "release", None)
            if release is not None:
                release()
    except OSError as e:  # network weather: transport errors, timeouts, DNS
        err = repr(e)
        if type(e).__name__ == "TlsVerifyError":  # not weather: a wrong CA or host; worth the run log
            exc = e
    except Exception as e:
        err = type(e).__name__
        exc = e
    except BaseException:
        if dev is not None:
            dev.close()
        raise
    finally:
        hw.unguard()
        if agent is not None:
            try:
                agent.close()
            except Exception:
                pass
    return summary, err, why, wlan, exc, tries, dev
