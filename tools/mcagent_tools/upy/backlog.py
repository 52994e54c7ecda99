# MicroPython script (run by mcagent_tools.bench and the flat-RAM tests, not imported by the host).
# argv[1]: path of a JSON file {"mode": "fill"|"flush", "config", "state", "store", "ca", "n", "budget_kb"}
# (a file, not the JSON itself: this Unix port dies with "FATAL: uncaught NLR" on an argument > ~256 bytes).
# fill:  onboard, configure, record n readings to the store (big heap, not measured).
# flush: optionally leave only budget_kb of free heap once the agent's modules are loaded (what a board
#        with frozen firmware has), then upload the whole backlog; prints one JSON line with the summary.
import gc
import json
import sys

DSC = {
    "configurationId": "CF-bench",
    "dataSources": [
        {
            "name": "bench",
            "dataPoints": [{"id": "DP-Bench", "name": "Bench", "type": "DOUBLE", "unit": "u"}],
        }
    ],
}
T0_MS = 1790000000000


def agent_for(a):
    from mcagent import Agent

    return Agent(
        config=a["config"], state=a["state"], ca=[a["ca"]], store=a["store"], dsc=DSC,
        store_options={"capacity_bytes": 64 * 1024 * 1024},
    )


def fill(a):
    agent = agent_for(a)
    agent.onboard()
    agent.configure(DSC)
    for i in range(a["n"]):
        agent.record({"DP-Bench": i * 0.5}, timestamp_ms=T0_MS + i * 1000)
    agent.store.commit()
    agent.close()
    print(json.dumps({"recorded": a["n"]}))


def flush(a):
    agent = agent_for(a)
    # Load every module the upload path needs before measuring, as frozen firmware would have them.
    import mcagent.exchange
    import mcagent.http
    import mcagent.identity
    import mcagent.uploader

    agent.store
    agent.identity
    agent.conn
    ballast = []
    gc.collect()
    if a.get("budget_kb"):
        # Fill the surplus in small pieces (one big block would not fit a fragmented heap).
        budget = a["budget_kb"] * 1024
        while gc.mem_free() - budget >= 1024:
            ballast.append(bytearray(min(4096, gc.mem_free() - budget - 512)))
        gc.collect()
    free = gc.mem_free()
    summary = agent.flush()
    agent.close()
    summary["heap_free_at_start"] = free
    print(json.dumps(summary))


with open(sys.argv[1]) as f:
    args = json.loads(f.read())
if args["mode"] == "fill":
    fill(args)
else:
    flush(args)
