"""The upload wake's setup (runtime.upwake): whether to upload at all, node.json, the watchdog, Wi-Fi, the
agent with its store opened. Released before the flush, the wake's heap peak.
"""

import json

from micropython import const

from mcagent import compat
from mcagent.clock import SANE_AFTER_S, Clock, iso_ms
from runtime import path
from runtime.hw import MARKS

_WIFI = const("runtime.wifi")
_HWCOLD = const("runtime.hwcold")
_TAKEN = const(2)  # runtime.hw.MARKS


class _Fields:
    """Attribute reads over a node.json part (how runtime.wifi reads a node's board and settings)."""

    def __init__(self, d):
        self.d = d

    def __getattr__(self, k):
        return self.d[k]


class _Node:
    """What runtime.wifi needs of a node: hw, board, settings, st (its tries), wlan, wait(), log(); an
    agent factory (tests): its clock."""

    def __init__(self, hw, st, log, board, settings, clock):
        self.hw = hw
        self.clock = clock
        self.st = st
        self.printer = log
        self.board = _Fields(board)
        self.settings = _Fields(settings)
        self.wlan = None

    def log(self, msg):
        _log(self.printer, msg)

    def wait(self, ms):
        self.hw.feed()
        self.hw.sleep_ms(ms)


def _log(printer, msg):
    if printer is not None:
        printer(msg)
    else:  # the node's format (runtime.node); the device clock is set, or this wake would not upload
        print("[node %s] %s" % (iso_ms(Clock().now_ms())[11:19], msg))


def begin(hw, flash, root, log, agent_factory=None):
    """None (declined: see runtime.upwake), or (agent, why, wlan, dev, budget_ms, error, exception, tries):
    the agent made and its store open, or None and why not (no Wi-Fi; the exception worth the run log).
    flash: the unix board's image, mounted at root (the working directory and the module path stay).
    main.upload_wake calls it when RTC memory asks for an upload."""
    if (hw.cause or compat.call_cold(_HWCOLD, "reset_cause", hw)) != "DEEPSLEEP_RESET":
        return None
    dev = None
    if flash:
        from runtime.flashimage import mount_image

        dev = mount_image(flash, root)
    got = None
    try:
        got = _begin(hw, root, log, dev, agent_factory)
    finally:
        if got is None and dev is not None:
            dev.close()
    return got


def _begin(hw, root, log, dev, agent_factory):
    data = hw.rtc_memory()
    try:
        from mcagent.state import decode

        why = decode(bytes(data[4:]))["asked"]  # the node's state: runtime.node reads it again after
        with open(path(root, "node.json")) as f:
            b = json.load(f)  # a dict: keys of 11 characters and more make no names
        b.pop("sensors", None)
        s = b["settings"]
        pin = b["safe_pin"]
    except Exception:  # unreadable: the usual wake reads them again and says what is wrong
        return None
    clock = Clock(hw.time)
    if clock.device_ms() // 1000 < SANE_AFTER_S:
        return None  # TLS checks the certificate's dates: the usual wake sets the clock first
    if compat.exists(path(root, "STOP")):
        return None  # the node stays at the REPL (runtime.start)
    if pin is not None and compat.call_cold(_HWCOLD, "pin_low", hw, pin):
        return None
    hw.set_rtc_memory(MARKS[_TAKEN] + data[4:])
    data = None
    _log(log, "upload (%s): a wake of its own" % why)
    budget = b["upload_budget_ms"]
    wlan = None
    tries = {"retries": 0}  # runtime.wifi counts its failed tries there, as in a node's state
    try:
        wd = b["watchdog_ms"]
        if wd and hw.machine is not None and compat.call_cold(_HWCOLD, "start_watchdog", hw, wd):
            compat.call_cold(_HWCOLD, "timer", hw, max(1000, wd // 4), hw.tick)
        hw.guard(budget + b["wifi_attempts"] * (b["wifi_timeout_ms"] + b["wifi_backoff_ms"]) + 60000)
        node = _Node(hw, tries, log, b, s, clock)
        if hw.network is not None and s["ssid"]:
            up = compat.call_cold(_WIFI, "up", node)
            wlan = node.wlan
            if not up:
                return None, why, wlan, dev, budget, "no Wi-Fi", None, tries["retries"]
        if agent_factory is not None:
            return agent_factory(node), why, wlan, dev, budget, None, None, tries["retries"]
        node = None
        from mcagent import Agent

        ca = path(root, "certs/") if s["ca"] is None else [path(root, c) for c in s["ca"]]
        config = path(root, s["agentconfig"])
        state = path(root, s["state_dir"])
        proxy = s["proxy"]
        dsc = b["dsc"]
        opts = b["store"]
        b = s = None  # node.json goes but for what the store takes when it opens
        agent = Agent(
            config=config,
            state=state,
            ca=ca,
            proxy=proxy,
            clock=clock,
            store=path(root, "store"),
            dsc=dsc,
            store_options=opts,
        )
        dsc = None
        agent.store  # noqa: B018 (opened now, while the heap is empty: node.json's DSC goes with it)
    except Exception as e:  # a wrong agentconfig.json, a store that cannot open: the usual wake says it
        return None, why, wlan, dev, budget, type(e).__name__, e, tries["retries"]
    return agent, why, wlan, dev, budget, None, None, tries["retries"]
