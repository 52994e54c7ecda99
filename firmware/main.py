"""The sensor node's entry points: boot, measure, upload, sleep - for years, with nobody at the REPL.

A board runs this at boot (deployed as /lib/mcnode.mpy, started by a two-line /main.py); the unix board runs
it with a command line (`micropython firmware/main.py --flash flash.img ...`, see runtime/unix.py). The
runtime itself lives in the `runtime` package (one wake: runtime/node.py), the agent in `mcagent`.

Entry points: main() on a board or the unix stand-in; run(board=..., settings=..., hw=..., agent_factory=...)
for tests and tools (every board facility comes in through `hw`, the agent through `agent_factory`).
"""

import sys

from mcagent import compat

# Nothing else at the top: what main imports is in the heap of every wake, the upload wake's too
# (runtime.upwake), which runs before the node's runtime is loaded. runtime.node comes in run().


def configure(board, settings):
    """(board, settings) as the runtime uses them: from paths, from decoded documents (checked) or as they
    are if already loaded (runtime.start, released after use)."""
    if hasattr(board, "sample_ms") and not hasattr(board, "points"):
        return board, settings
    return compat.call_cold("runtime.start", "configure", board, settings)


def run(
    board=None,
    settings=None,
    hw=None,
    agent_factory=None,
    max_cycles=None,
    stop=None,
    log=None,
    root="",
    up=None,
):
    """Boot the node and run cycles: max_cycles (tests), stop(node) -> True (the unix board's time
    limit; otherwise it may give the longest wait in ms before it is asked again), or forever. Returns the
    Node; a deep sleep does not return (on fakes it raises).

    board/settings: loaded (runtime.nodecfg), dicts (board.json/settings.json content, checked here, or a
    compiled node.json) or paths; agent_factory(node) -> the agent (default: runtime.wake.default_agent,
    mcagent.Agent from settings);
    root: directory of the node's files (default: cwd); up: the result of this boot's upload wake, when
    the caller ran it (runtime.upwake; otherwise it runs here if RTC memory asks for one: upload_wake)."""
    compat.pack_heap()  # what a wake keeps goes to the bottom of the heap (see compat.pack_heap)
    board, settings = configure(board, settings)
    if hw is None:
        hw = compat.call_cold("runtime.hwcold", "detect")
    if up is None:  # (False: the caller's upload wake declined; not again here)
        up = upload_wake(hw, None, root, log, agent_factory)
    from runtime.node import Node

    node = Node(board, settings, hw, agent_factory, log, stop, root)
    node.boot()
    while True:
        ms = node.step(up or None)  # after an upload wake: the rest of the cycle its wake before began
        up = None
        if max_cycles is not None and node.cycles >= max_cycles:
            return node
        if stop is not None:
            left = stop(node)
            if left is True:
                node.finish()
                return node
            if left:
                ms = min(ms, left)
        node.sleep(ms)


def upload_wake(hw, flash=None, root="", log=None, agent_factory=None):
    """The upload asked of this boot by the wake before it, done now (runtime.upwake: loaded only when
    RTC memory says one was asked; flash: the unix board's image, mounted at root for it); its result,
    None when none was asked, or False when it declined or failed (the node's wake uploads itself). What
    it loaded goes after it: the node's wake follows in this heap."""
    from runtime.hw import MARKS

    if not hw.rtc_memory().startswith(MARKS[1]):  # an upload asked of this wake
        return None
    try:
        return compat.call_phase("runtime.upwake", "run", hw, flash, root, log, agent_factory) or False
    except Exception as e:  # e.g. MemoryError: the node's own wake goes on, and uploads itself
        print("mcagent: upload wake failed:", repr(e))
        return False


def device_main():
    """On a board (boot runs main.py): files from the flash root, the real modules (runtime.start). An
    upload wake runs first, before the node's configuration is loaded."""
    hw = compat.call_cold("runtime.hwcold", "detect")
    up = upload_wake(hw)
    try:
        prepared = compat.call_cold("runtime.start", "prepare", hw)
    except Exception as e:
        if not up:
            raise
        # e.g. MemoryError in the heap the upload left (its watchdog runs): a fresh boot goes on from
        # the state on flash (RTC memory says TAKEN: that boot uploads what is left itself)
        print("mcagent: boot after the upload wake failed:", repr(e))
        hw.deepsleep(1000)
        raise
    if prepared is None:
        return None
    b, settings, hw = prepared
    try:
        return run(b, settings, hw, up=up)
    except ValueError as e:  # agentconfig.json missing or wrong: raised before the watchdog starts (but
        # after an upload wake, whose watchdog runs: it resets the board once, and the next boot stays)
        print("mcagent: not starting:", e)
        return None
    except Exception as e:  # after the watchdog started: do not let it reset us in a tight loop
        compat.call_cold("runtime.start", "crashed", e, settings, hw)


def main(argv=None, agent_factory=None):
    compat.pack_heap()
    if argv is None:
        argv = sys.argv[1:] if len(sys.argv) > 1 else []
    if argv or compat.UNIX_PORT:
        # The unix board: flash = a littlefs image (or a directory), simulated sensors and deep sleep; the
        # host's clock and network as they are. Its command line (runtime.unix) is released before the node
        # runs, as a board never holds it: the wake runs from here, not from a frame of that module.
        # A wake from deep sleep asked to upload does that first, before the command line's setup.
        up = None
        woke = compat.call_cold("runtime.unixrtc", "deep_wake", argv)
        if woke is not None:
            up = upload_wake(*woke, agent_factory)
        woke = None  # up: None (not asked), False (declined) or the upload wake's result
        session = compat.call_cold("runtime.unix", "setup", argv, up[6] if up else None)
        return None if session is None else session.run(run, agent_factory, up)
    return device_main()


if __name__ == "__main__":
    main()
