"""mcagent.status: what `mcagent status` shows of a node, never a secret."""

import json
import os

from mcagent import status
from mcagent.state import State
from mcagent.store import Store

SECRET = "S3CRET-never-shown"


def make_node(root):
    with open(root + "/settings.json", "w") as f:
        f.write(json.dumps({"wifi": {"ssid": "x", "password": SECRET}}))
    with open(root + "/agentconfig.json", "w") as f:
        f.write(json.dumps({"content": {"clientId": "a" * 32, "iat": SECRET, "baseUrl": "https://x"}}))
    State(root + "/agent-state").save(
        "registration", {"client_id": "a" * 32, "secret": SECRET, "expires_at": 1790000000, "rat": SECRET}
    )
    State(root + "/node").save("state", {"v": 1, "sent": 7, "uploads": 2, "last_upload_ms": 1790000000000})
    store = Store(root + "/store", datapoints=[("DP-T", "DOUBLE")], configuration_id="CF-1")
    for i in range(5):
        store.append_sample(1790000000000 + i, {"DP-T": 1.5})
    store.commit()


def test_status_reports_counts_and_no_secret(workdir):
    make_node(workdir)
    facts = status.collect(workdir)
    assert facts["agent_id"] == "a" * 32
    assert facts["onboarding"] == "onboarded"
    assert facts["buffered"] == 5
    assert facts["sent"] == 7
    assert facts["last_upload"] == "2026-09-21T14:13:20.000Z"
    assert facts["secret_expires"] == "2026-09-21T14:13:20.000Z"
    assert SECRET not in json.dumps(facts)


def test_status_of_an_empty_node_does_not_fail(workdir):
    os.mkdir(workdir + "/empty")
    facts = status.collect(workdir + "/empty")
    assert facts["agent_id"] is None and facts["onboarding"] == "not onboarded"
    assert facts["sent"] is None
