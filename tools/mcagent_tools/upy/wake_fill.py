# MicroPython script (run by mcagent_tools.fit, not imported by the host): prepare a later wake.
# argv[1]: path of a JSON file {"image", "blocks", "n", "t0_ms", "drop_token"}.
# Mounts the unix board's flash image, appends n readings of the board's first data point to the agent's
# store (as earlier wakes would have, while the service was out of reach) and, with drop_token, forgets
# the cached access token so the next wake must fetch one (the client assertion path).
import json
import os
import sys

with open(sys.argv[1]) as f:
    args = json.loads(f.read())
from runtime.flashimage import mount_image

dev = mount_image(args["image"], "/flash", args["blocks"])
try:
    os.chdir("/flash")
    with open("node.json") as f:
        cfg = json.loads(f.read())
    from mcagent.store import Store

    dsc = cfg["dsc"]
    store = Store("store", datapoints=dsc, configuration_id=dsc.get("configurationId"), **cfg["store"])
    point = dsc["dataSources"][0]["dataPoints"][0]["id"]
    for i in range(args["n"]):
        store.append_sample(args["t0_ms"] + i * 1000, {point: i % 100}, None)
    store.commit()
    state = cfg["settings"]["state_dir"]
    if args.get("drop_token"):
        try:
            os.remove(state + "/token")
        except OSError:
            pass
    print(json.dumps({"filled": args["n"], "pending": store.pending_count()}))
finally:
    os.chdir("/")
    os.umount("/flash")
    dev.close()
