"""Data source configuration (§E) and data point mappings, with every validation rule."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from sgclient import DSC, Agent
from southgate.testing import RunningSouthgate

AM = "/api/agentmanagement/v3"
MAPS = "/api/mindconnect/v3/dataPointMappings"


def dsc_path(a: Agent) -> str:
    return f"{AM}/agents/{a.id}/dataSourceConfiguration"


def test_dsc_put_get_and_etags(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    assert a.http.request("GET", dsc_path(a), token=a.token).status == 404
    r = a.put_dsc(if_match="0")
    assert r.status == 200
    body = r.json()
    assert body["eTag"] == "1" and body["id"] and body["configurationId"] == DSC["configurationId"]
    assert body["dataSources"] == DSC["dataSources"]
    got = a.http.request("GET", dsc_path(a), token=a.token)
    assert got.status == 200 and got.json() == body
    assert a.put_dsc(if_match="0").status == 412
    assert a.put_dsc(if_match="7").status == 412
    r = a.put_dsc(if_match="1")
    assert r.status == 200 and r.json()["eTag"] == "2" and r.json()["id"] == body["id"]
    assert a.put_dsc(if_match='"2"').status == 200
    r = a.http.json("PUT", dsc_path(a), DSC, token=a.token)
    assert r.status == 428


def _bad(mutate: Any) -> dict[str, Any]:
    d = copy.deepcopy(DSC)
    mutate(d)
    return d


BAD_DSCS = {
    "missing configurationId": _bad(lambda d: d.pop("configurationId")),
    "configurationId not string": _bad(lambda d: d.update(configurationId=5)),
    "no dataSources": _bad(lambda d: d.update(dataSources=[])),
    "dataSources not list": _bad(lambda d: d.update(dataSources={})),
    "source without name": _bad(lambda d: d["dataSources"][0].pop("name")),
    "dataPoints not list": _bad(lambda d: d["dataSources"][0].update(dataPoints="x")),
    "bad type": _bad(lambda d: d["dataSources"][0]["dataPoints"][0].update(type="FLOAT")),
    "missing unit": _bad(lambda d: d["dataSources"][0]["dataPoints"][0].pop("unit")),
    "missing id": _bad(lambda d: d["dataSources"][0]["dataPoints"][0].pop("id")),
    "missing name": _bad(lambda d: d["dataSources"][0]["dataPoints"][0].pop("name")),
    "duplicate id": _bad(
        lambda d: d["dataSources"].append(
            {"name": "DS2", "dataPoints": [{"id": "DP-temp", "name": "t2", "type": "INT", "unit": ""}]}
        )
    ),
    "not an object": [],
}


@pytest.fixture(scope="module")
def logged_in(sg: RunningSouthgate) -> Agent:
    return Agent(sg).onboard().login()


@pytest.mark.parametrize("case", sorted(BAD_DSCS))
def test_invalid_dsc_400(logged_in: Agent, case: str) -> None:
    a = logged_in
    r = a.http.json("PUT", dsc_path(a), BAD_DSCS[case], token=a.token, headers={"If-Match": "0"})
    assert r.status == 400, (case, r.body)
    assert r.json()["message"]


def test_dsc_not_json(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    r = a.http.request(
        "PUT", dsc_path(a), b"{nope", {"Content-Type": "application/json", "If-Match": "0"}, token=a.token
    )
    assert r.status == 400


# mappings -------------------------------------------------------------------------------------------------
def test_mapping_create_list_delete(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    assert a.put_dsc().status == 200
    entity = uuid.uuid4().hex
    r = a.http.json(
        "POST",
        MAPS + "?",
        {
            "agentId": a.id,
            "dataPointId": "DP-temp",
            "entityId": entity,
            "propertySetName": "env",
            "propertyName": "temperature",
        },
        token=a.token,
    )
    assert r.status == 201
    m = r.json()
    assert (
        m["dataPointType"] == m["propertyType"] == "DOUBLE" and m["dataPointUnit"] == m["propertyUnit"] == "C"
    )
    assert m["validity"] == {"status": "VALID", "reasons": []} and m["keepMapping"] is False
    assert m["qualityEnabled"] is True
    flt = quote(json.dumps({"agentId": a.id}))
    page = a.http.request("GET", f"{MAPS}?size=2000&filter={flt}", token=a.token).json()
    assert [x["id"] for x in page["content"]] == [m["id"]]
    assert page["totalElements"] == 1 and page["first"] and page["last"] and page["size"] == 2000
    assert a.http.request("GET", f"{MAPS}/{m['id']}", token=a.token).json() == m
    assert a.http.request("DELETE", f"{MAPS}/{m['id']}", token=a.token).status == 204
    assert a.http.request("DELETE", f"{MAPS}/{m['id']}", token=a.token).status == 404
    assert a.http.request("GET", f"{MAPS}?filter={flt}", token=a.token).json()["content"] == []


def test_mapping_rules(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    b = Agent(sg).onboard().login()
    assert a.put_dsc().status == 200
    assert b.put_dsc().status == 200
    e1, e2 = uuid.uuid4().hex, uuid.uuid4().hex
    assert a.map("DP-temp", e1, "env", "temperature").status == 201
    # exactly the same mapping again
    assert a.map("DP-temp", e1, "env", "temperature").status == 409
    # same data point, other property of the same property set of the same entity
    assert a.map("DP-temp", e1, "env", "temperature2").status == 409
    # a property takes at most one data point (also across agents)
    assert b.map("DP-temp", e1, "env", "temperature").status == 409
    # the same data point to another property set and to another entity is fine
    assert a.map("DP-temp", e1, "env2", "temperature").status == 201
    assert a.map("DP-temp", e2, "env", "temperature").status == 201
    # type and unit must equal the property's (the property was created by the first mapping)
    assert b.map("DP-count", e1, "env", "temperature").status in (400, 409)
    assert b.map("DP-count", e2, "env2", "count").status == 201
    assert a.map("DP-on", e2, "env2", "count").status == 400  # BOOLEAN onto INT property
    bad = {
        "agentId": a.id,
        "dataPointId": "DP-temp",
        "entityId": e1,
        "propertySetName": "env",
        "propertyName": "x",
    }
    for key, value, status in (
        ("dataPointId", "DP-none", 400),
        ("entityId", "not-hex", 400),
        ("propertySetName", "", 400),
        ("propertyName", "bad name!", 400),
        ("agentId", b.id, 403),
        ("keepMapping", "yes", 400),
    ):
        r = a.http.json("POST", MAPS, dict(bad, **{key: value}), token=a.token)
        assert r.status == status, (key, r.body)
    assert a.http.json("POST", MAPS, {"agentId": a.id}, token=a.token).status == 400
    assert a.http.json("POST", MAPS, [], token=a.token).status == 400
    # bound to the agent: another agent's filter or mapping id
    flt = quote(json.dumps({"agentId": b.id}))
    assert a.http.request("GET", f"{MAPS}?filter={flt}", token=a.token).status == 403
    b_maps = b.http.request("GET", MAPS, token=b.token).json()["content"]
    assert a.http.request("DELETE", f"{MAPS}/{b_maps[0]['id']}", token=a.token).status == 404
    assert a.http.request("GET", f"{MAPS}?filter=nojson", token=a.token).status == 400
    assert a.http.request("GET", MAPS).status == 401


def test_dsc_update_deletes_or_revalidates_mappings(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    assert a.put_dsc().status == 200
    e = uuid.uuid4().hex
    assert a.map("DP-temp", e, "env", "temperature", keep=False).status == 201
    assert a.map("DP-count", e, "env", "count", keep=True).status == 201
    assert a.map("DP-on", e, "env", "on", keep=True).status == 201
    new = copy.deepcopy(DSC)
    points = new["dataSources"][0]["dataPoints"]
    new["dataSources"][0]["dataPoints"] = [p for p in points if p["id"] != "DP-on"]
    assert a.put_dsc(new, if_match="1").status == 200
    maps = {m["dataPointId"]: m for m in a.http.request("GET", MAPS, token=a.token).json()["content"]}
    assert set(maps) == {"DP-count", "DP-on"}
    assert maps["DP-count"]["validity"]["status"] == "VALID"
    assert maps["DP-on"]["validity"] == {"status": "INVALID", "reasons": ["MISSING_DATAPOINT"]}


def test_mapping_calls_rate_limited(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    a = Agent(sg, tenant="maplimit").onboard().login()
    sg.settings(mapping_calls_per_hour=3)
    for _ in range(3):
        assert a.http.request("GET", MAPS, token=a.token).status == 200
    r = a.http.request("GET", MAPS, token=a.token)
    assert r.status == 429 and int(r.headers["retry-after"]) > 0
