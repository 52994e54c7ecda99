# MicroPython script (run by mcagent_tools.fit, not imported by the host): the agent's store on a unix
# board's flash image, between wakes.
# argv[1]: path of a JSON file {"mode": "fill"|"status", "image", "blocks", "n", "t0_ms", "drop_token", "due"}.
# fill:   append n readings of the board's first data point (as earlier wakes would have while the service
#         was out of reach) and, with drop_token, forget the cached access token so the next wake must
#         fetch one (the client assertion path). With due, the node's schedule as those wakes left it: a
#         sample due now, and ("upload") the n readings counted as samples since the last upload, or
#         ("sample") an upload a moment ago, so the next wake from deep sleep only samples.
# status: print {"sent": readings the node counted as sent, "taken": samples it counted as taken,
#         "pending": records still in the store} (fill prints the same after it).
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

    dsc = cfg["dsc"]
    store = Store("store", datapoints=dsc, configuration_id=dsc.get("configurationId"), **cfg["store"])
    if args["mode"] == "fill":
        point = dsc["dataSources"][0]["dataPoints"][0]["id"]
        for i in range(args["n"]):
            store.append_sample(args["t0_ms"] + i * 1000, {point: i % 100}, None)
        store.commit()
        if args.get("drop_token"):
            State(cfg["settings"]["state_dir"]).remove("token")
        if args.get("due"):
            from mcagent.clock import Clock

            now = Clock().now_ms()
            node = State("node")
            st = node.load("state")
            st["next_sample_ms"] = now
            if args["due"] == "upload":
                st["samples"] += args["n"]
            else:  # 30 s of slack: a slow machine does not make the upload period due before the wake
                st["samples"] = 0
                st["last_upload_ms"] = now + 30000
            node.save("state", st)
    st = State("node").load("state") or {}
    print(json.dumps({"sent": st.get("sent", 0), "taken": st.get("taken", 0), "pending": store.pending_count()}))
finally:
    os.chdir("/")
    dev.close()  # unmounts it
