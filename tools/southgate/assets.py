"""The asset model (assets, aspects, typed variables per tenant) and the checks a mapping meets on it.

The real Insights Hub accepts a data point mapping only onto an asset of the agent's tenant whose aspect has
the variable, with the data point's type and unit (docs/protocol.md §E.4); southgate checks the same, so the
first real deployment does not fail where southgate succeeded. `serve --auto-assets` restores the old
convenience of creating what a mapping names.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from .errors import ApiError, bad_request, not_found
from .service import HEX32, Service, check_tenant
from .storage import Conflict, Variable
from .validation import TYPES

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ASPECT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")  # no '.': it separates aspect and variable
MAX_UNIT = 32


def parse_variable(spec: str) -> Variable:
    """'ASPECT.VAR:TYPE[:UNIT]' -> (aspect, variable, type, unit); ValueError says what is wrong."""
    target, sep, rest = spec.partition(":")
    if not sep:
        raise ValueError(f"--variable {spec[:80]!r}: expected ASPECT.VAR:TYPE[:UNIT]")
    aspect, dot, var = target.partition(".")
    type_, _, unit = rest.partition(":")
    return check_variable(aspect if dot else "", var, type_.upper(), unit)


def check_variable(aspect: Any, var: Any, type_: Any, unit: Any) -> Variable:
    """One variable of untrusted input (a request, the command line, a board); ValueError names the fault."""
    if not isinstance(aspect, str) or not ASPECT_RE.match(aspect):
        raise ValueError(
            f"aspect name {str(aspect)[:64]!r} must be letters, digits, '_' or '-' (at most 128)"
        )
    if not isinstance(var, str) or not NAME_RE.match(var):
        raise ValueError(f"variable name {str(var)[:64]!r} is not a valid name")
    if type_ not in TYPES:
        raise ValueError(f"variable {aspect}.{var}: type must be one of {', '.join(TYPES)}")
    if not isinstance(unit, str) or len(unit) > MAX_UNIT or any(ord(c) < 32 for c in unit):
        raise ValueError(f"variable {aspect}.{var}: unit must be a string of at most {MAX_UNIT} characters")
    return Variable(aspect, var, type_, unit)


def create(
    svc: Service,
    tenant: str | None,
    name: str | None,
    variables: list[Variable],
    asset_id: str | None = None,
) -> dict[str, Any]:
    """Create (or extend, same tenant) an asset with its aspects' variables; returns its JSON."""
    tenant = check_tenant(tenant)
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise bad_request("asset name must be a non-empty string of at most 128 characters")
    if asset_id is None:
        asset_id = uuid.uuid4().hex
    elif not isinstance(asset_id, str) or not HEX32.match(asset_id):
        raise bad_request("asset id must be 32 lowercase hex characters")
    try:
        svc.storage.create_asset(asset_id, tenant, name, variables, svc.clock.now_ms())
    except Conflict as exc:
        raise ApiError(409, str(exc)) from exc
    out = asset_json(svc, asset_id)
    assert out is not None
    return out


def asset_json(svc: Service, asset_id: str) -> dict[str, Any] | None:
    """An asset as Asset Management shows it, with its aspects and variables inline."""
    st = svc.storage
    row = st.asset(asset_id)
    if row is None:
        return None
    return {
        "assetId": row["entity_id"],
        "name": row["name"],
        "tenantId": row["tenant"],
        "aspects": [aspect_json(svc, asset_id, a) for a in st.aspect_names(asset_id)],
    }


def aspect_json(svc: Service, asset_id: str, aspect: str) -> dict[str, Any]:
    return {
        "name": aspect,
        "variables": [
            {"name": p["property"], "dataType": p["type"], "unit": p["unit"]}
            for p in svc.storage.props(asset_id, aspect)
        ],
    }


def in_tenant(svc: Service, asset_id: str, tenant: str | None) -> dict[str, Any]:
    """The asset if it exists in `tenant` (None: any tenant); else 404: tenants never see each other's."""
    row = svc.storage.asset(asset_id)
    if row is None or (tenant is not None and row["tenant"] != tenant):
        raise not_found(f"asset {asset_id} not found")
    return row


def check_mapping_target(
    svc: Service, tenant: str, entity: str, aspect: str, var: str, dp: dict[str, Any], now_ms: int
) -> None:
    """Raise the real service's answer when the mapping's target does not fit the data point: 404 for a
    missing asset or aspect, 400 for a missing variable or a type/unit mismatch. With auto_assets the
    missing pieces are created in the agent's tenant (the property takes the point's type and unit)."""
    st = svc.storage
    row = st.asset(entity)
    if svc.auto_assets:
        if row is None:
            st.ensure_asset(entity, now_ms, tenant=tenant)
        elif row["tenant"] not in (tenant, ""):
            raise ApiError(403, f"entity {entity} belongs to another tenant")
        if st.prop(entity, aspect, var) is None:
            st.add_prop(entity, aspect, var, dp["type"], dp.get("unit") or "")
    elif row is None or row["tenant"] != tenant:
        raise not_found(
            f"asset {entity} not found in tenant {tenant}; model it first (southgate asset create)"
        )
    elif aspect not in st.aspect_names(entity):
        raise not_found(f"aspect {aspect!r} not found on asset {entity}")
    existing = st.prop(entity, aspect, var)
    if existing is None:
        raise bad_request(f"variable {var!r} not found in aspect {aspect!r} of asset {entity}")
    if existing["type"] != dp["type"]:
        raise bad_request(
            "type mismatch: data point {!r} is {}, variable {}.{} is {}".format(
                dp["id"], dp["type"], aspect, var, existing["type"]
            )
        )
    if existing["unit"] != (dp.get("unit") or ""):
        raise bad_request(
            "unit mismatch: data point {!r} has {!r}, variable {}.{} has {!r}".format(
                dp["id"], dp.get("unit") or "", aspect, var, existing["unit"]
            )
        )


def from_board(board_path: Path) -> tuple[str | None, list[Variable]]:
    """(asset id, [(aspect, variable, type, unit)]) that a board's data points map onto, read with the
    firmware's own board.json and DSC code so the model is exactly what the agent will map."""
    from mcagent_tools.firmware import module  # noqa: PLC0415 - firmware code only when this helper runs

    fwboard, fwdsc = module("mcagent.board"), module("mcagent.dsc")
    try:
        desc = fwboard.parse(json.loads(board_path.read_text()), str(board_path)).dsc()
        _, maps, types = fwdsc.build(desc)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{board_path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the firmware's BoardError/DscError name the problem
        raise ValueError(str(exc)) from exc
    units = {dp["id"]: dp.get("unit") or "" for src in desc["dataSources"] for dp in src["dataPoints"]}
    # The firmware's mappings are positional (dataPointId, entityId, aspect, variable): named once, here.
    targets = [(dp_id, entity, aspect, var) for dp_id, entity, aspect, var in maps]
    entities = {entity for _, entity, _, _ in targets}
    if len(entities) > 1:
        raise ValueError(f"{board_path}: its data points map onto {len(entities)} assets; model each one")
    variables = [
        check_variable(aspect, var, types[dp_id], units.get(dp_id, "")) for dp_id, _, aspect, var in targets
    ]
    return (entities.pop() if entities else None), variables
