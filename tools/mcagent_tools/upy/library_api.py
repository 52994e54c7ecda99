# MicroPython script (run by mcagent_tools.fit, not imported by the host): the library API as an application
# on a board would use it, on a littlefs flash image: Agent(...); onboard, configure, token; record n
# readings; flush. Prints "mcagent-library {summary}" when everything was sent.
# argv[1]: path of a JSON file {"image", "blocks", "config", "ca", "dsc", "n", "t0_ms", "capacity_bytes"}.
import json
import os
import sys

with open(sys.argv[1]) as f:
    args = json.loads(f.read())
from runtime.flashimage import mount_image

dev = mount_image(args["image"], "/flash", args["blocks"])
try:
    os.chdir("/flash")
    from mcagent import Agent

    dsc = args["dsc"]
    args = (args["config"], args["ca"], args["n"], args["t0_ms"], args["capacity_bytes"])
    agent = Agent(config=args[0], state="state", ca=[args[1]], store="store", dsc=dsc,
                  store_options={"capacity_bytes": args[4]})
    agent.onboard()
    agent.configure(dsc)
    agent.token()
    point = dsc["dataSources"][0]["dataPoints"][0]["id"]
    dsc = None
    for i in range(args[2]):
        agent.record({point: (i % 100) * 0.5}, timestamp_ms=args[3] + i * 1000)
    summary = agent.flush()
    agent.close()
    import micropython

    micropython.qstr_info()  # "qstr pool: ..., n_qstr=N, ...": the names the run made (make fit reports them)
    print("mcagent-library " + json.dumps(summary))
finally:
    os.chdir("/")
    dev.close()  # unmounts it
