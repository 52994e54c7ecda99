# MicroPython script (run by mcagent_tools.fit, not imported by the host): what a unix board's flash holds.
# argv[1]: path of a JSON file {"image", "blocks"}; prints {"sent": readings the node counted as sent,
# "pending": records still in the agent's store}.
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
    from mcagent.state import State
    from mcagent.store import Store

    st = State("node").load("state") or {}
    dsc = cfg["dsc"]
    store = Store("store", datapoints=dsc, configuration_id=dsc.get("configurationId"), **cfg["store"])
    print(json.dumps({"sent": st.get("sent", 0), "pending": store.pending_count()}))
finally:
    os.chdir("/")
    os.umount("/flash")
    dev.close()
