"""IoT File service as Node's UploadFile uses it (§D.5): single PUT and multipart upload, plus reading."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any

from aiohttp import web

from . import apps, assets
from .clock import iso_ms, parse_iso
from .errors import ApiError, bad_request, not_found
from .ingest import remove_blob, store_file
from .routes_read import read_auth
from .service import HEX32, Service
from .webutil import agent_auth, is_admin, json_response, own_entity, service, stored_content_type

routes = web.RouteTableDef()
FILES = "/api/iotfile/v3/files"
MAX_PUT_BYTES = 64 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024


def _target(request: web.Request) -> tuple[str, str]:
    entity = request.match_info["entity_id"]
    path = request.match_info["path"]
    if not HEX32.match(entity):
        raise bad_request("entityId must be 32 lowercase hex characters")
    if (
        not path
        or len(path) > 1024
        or path.startswith("/")
        or any(s in ("", ".", "..") for s in path.split("/"))
    ):
        raise bad_request(
            "file path must be relative, without empty, '.' or '..' segments (at most 1024 chars)"
        )
    return entity, path


def _if_match(request: web.Request) -> str | None:
    value = request.headers.get("If-Match")
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _check_precondition(request: web.Request, existing: dict[str, Any] | None) -> None:
    wanted = _if_match(request)
    if existing is None:
        if wanted not in (None, "*", "0", ""):
            # Node guesses etags; an If-Match for a file that does not exist cannot hold.
            raise ApiError(412, "If-Match given but the file does not exist")
        return
    if wanted is None:
        raise ApiError(409, f"file exists; send If-Match with its ETag ({existing['etag']}) to overwrite it")
    if wanted != "*" and wanted != str(existing["etag"]):
        raise ApiError(412, f"If-Match {wanted[:20]!r} does not match the file's ETag {existing['etag']}")


async def _body_to_blob(request: web.Request, svc: Service, limit: int) -> tuple[str, int, str]:
    """Stream the body into a new blob; returns (blob name, size, sha256)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"file body exceeds {limit} bytes", close=True)
    name = uuid.uuid4().hex + ".bin"
    path = svc.files_dir / name
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as f:
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"file body exceeds {limit} bytes", close=True)
                digest.update(chunk)
                f.write(chunk)
    except BaseException:
        remove_blob(svc, name)
        raise
    return name, size, digest.hexdigest()


def _meta(request: web.Request, svc: Service) -> dict[str, Any]:
    ts = request.headers.get("timestamp")
    ts_ms = svc.clock.now_ms()
    if ts:
        try:
            ts_ms = parse_iso(ts)
        except ValueError as exc:
            raise bad_request(f"timestamp header: {exc}") from exc
    desc = request.headers.get("description", "")
    if len(desc) > 255:
        raise bad_request("description header is longer than 255 characters")
    return {
        "description": desc,
        "type": request.headers.get("type") or "application/octet-stream",
        "ts_ms": ts_ms,
    }


def _writer(request: web.Request, entity: str) -> dict[str, Any]:
    """Who puts a file: an agent (onto a free asset or its own), or an application with a tenant token (or
    the admin token) onto a modelled asset of its tenant, e.g. the files of an IoT TS Bulk import job."""
    auth = request.headers.get("Authorization", "")
    token = auth.partition(" ")[2].strip()
    svc = service(request)
    if is_admin(request) or apps.app_for_token(svc, token) is not None:
        tenant = read_auth(request)
        row = assets.in_tenant(svc, entity, tenant)
        return {"id": request["agent_id"], "tenant": row["tenant"]}
    agent = agent_auth(request)
    own_entity(request, agent, entity)
    return agent


def _created(etag: int) -> web.Response:
    return web.Response(status=201, headers={"ETag": str(etag)})


@routes.put(FILES + "/{entity_id}/{path:.+}")
async def put_file(request: web.Request) -> web.Response:
    svc = service(request)
    st = svc.storage
    entity, path = _target(request)
    agent = _writer(request, entity)
    upload = request.query.get("upload")
    part = request.query.get("part")
    if upload is not None and part is not None:
        raise bad_request("use either ?upload= or ?part=, not both")
    if upload not in (None, "start", "complete", "abort"):
        raise bad_request("upload must be start, complete or abort")
    meta = _meta(request, svc)
    existing = st.file(entity, path)

    if upload is None and part is None:
        _check_precondition(request, existing)
        blob, size, sha = await _body_to_blob(request, svc, MAX_PUT_BYTES)
        st.ensure_asset(entity, svc.clock.now_ms(), tenant=agent["tenant"])
        etag = store_file(
            svc,
            agent["id"],
            entity,
            path,
            blob,
            size,
            sha,
            meta["type"],
            meta["description"],
            meta["ts_ms"],
            "iotfile",
            {},
        )
        return _created(etag)

    if upload == "start":
        _check_precondition(request, existing)
        if await request.content.read(1):
            raise bad_request("?upload=start takes an empty body")
        running = st.upload(entity, path)
        if running is not None and running["agent_id"] != agent["id"]:
            raise ApiError(409, "another agent's multipart upload of this file is in progress")
        _abort(svc, entity, path)
        # the asset is the writer's tenant's from the start: nobody of another tenant reaches the upload
        st.ensure_asset(entity, svc.clock.now_ms(), tenant=agent["tenant"])
        st.put_upload(entity, path, agent["id"], svc.clock.now_ms(), {"parts": {}, **meta})
        return web.Response(status=201)

    if upload == "abort":
        running = st.upload(entity, path)
        if running is None:
            raise not_found("no multipart upload in progress for this file")
        if running["agent_id"] != agent["id"]:
            raise ApiError(403, "the multipart upload belongs to another agent")
        _abort(svc, entity, path)
        return web.Response(status=200)

    state = st.upload(entity, path)
    if state is None:
        raise bad_request("no multipart upload in progress for this file (start it with ?upload=start)")
    if state["agent_id"] != agent["id"]:
        raise ApiError(403, "the multipart upload belongs to another agent")
    if part is not None:
        try:
            number = int(part)
        except ValueError as exc:
            raise bad_request("part must be a positive integer") from exc
        if not 1 <= number <= 10000:
            raise bad_request("part must be between 1 and 10000")
        blob, size, _ = await _body_to_blob(request, svc, MAX_PUT_BYTES)
        if size == 0:
            remove_blob(svc, blob)
            raise bad_request("a part must not be empty")
        _save_part(svc, entity, path, number, blob, size)
        return web.Response(status=201)

    _check_precondition(request, existing)
    blob, size, _ = await _body_to_blob(request, svc, MAX_PUT_BYTES)
    fresh = st.upload(entity, path)
    if fresh is None:
        remove_blob(svc, blob)
        raise bad_request("the multipart upload was aborted meanwhile")
    info = json.loads(fresh["meta"])
    parts = info["parts"]
    if size:
        number = max((int(n) for n in parts), default=0) + 1
        info = _save_part(svc, entity, path, number, blob, size)
        parts = info["parts"]
    else:
        remove_blob(svc, blob)
    numbers = sorted(int(n) for n in parts)
    if not numbers:
        raise bad_request("multipart upload has no parts")
    if numbers != list(range(1, len(numbers) + 1)):
        raise bad_request(f"multipart upload parts are not contiguous from 1: {numbers[:20]}")
    for n in numbers[:-1]:
        if parts[str(n)]["size"] < MIN_PART_BYTES:
            raise bad_request(f"part {n} is smaller than 5 MiB (only the last part may be)")
    final = uuid.uuid4().hex + ".bin"
    digest = hashlib.sha256()
    total = 0
    with open(svc.files_dir / final, "wb") as out:
        for n in numbers:
            with open(svc.files_dir / parts[str(n)]["blob"], "rb") as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    digest.update(chunk)
                    total += len(chunk)
                    out.write(chunk)
    st.ensure_asset(entity, svc.clock.now_ms(), tenant=agent["tenant"])
    etag = store_file(
        svc,
        agent["id"],
        entity,
        path,
        final,
        total,
        digest.hexdigest(),
        info["type"],
        info["description"],
        info["ts_ms"],
        "iotfile",
        {"parts": len(numbers)},
    )
    _abort(svc, entity, path)
    return _created(etag)


def _save_part(svc: Service, entity: str, path: str, number: int, blob: str, size: int) -> dict[str, Any]:
    """Record one part; re-reads the upload state because Node sends up to 3 parts concurrently."""
    state = svc.storage.upload(entity, path)
    if state is None:
        remove_blob(svc, blob)
        raise bad_request("the multipart upload was aborted or completed meanwhile")
    info = json.loads(state["meta"])
    old = info["parts"].get(str(number))
    if old:
        remove_blob(svc, old["blob"])
    info["parts"][str(number)] = {"blob": blob, "size": size}
    svc.storage.put_upload(entity, path, state["agent_id"], state["started_ms"], info)
    return dict(info)


def _abort(svc: Service, entity: str, path: str) -> None:
    state = svc.storage.upload(entity, path)
    if state is None:
        return
    for p in json.loads(state["meta"])["parts"].values():
        remove_blob(svc, p["blob"])
    svc.storage.delete_upload(entity, path)


def file_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": os.path.basename(row["path"]),
        "path": row["path"],
        "entityId": row["entity_id"],
        "size": row["size"],
        "sha256": row["sha256"],
        "eTag": row["etag"],
        "type": row["content_type"],
        "description": row["description"],
        "timestamp": iso_ms(row["ts_ms"]),
        "source": row["source"],
        "agentId": row["agent_id"],
        "details": json.loads(row["details"]),
    }


@routes.get(FILES + "/{entity_id}")
async def list_files(request: web.Request) -> web.Response:
    tenant = read_auth(request)
    entity = request.match_info["entity_id"]
    if not HEX32.match(entity):
        raise bad_request("entityId must be 32 lowercase hex characters")
    if tenant is not None:
        assets.in_tenant(service(request), entity, tenant)
    return json_response([file_json(r) for r in service(request).storage.files(entity_id=entity)])


@routes.get(FILES + "/{entity_id}/{path:.+}")
async def get_file(request: web.Request) -> web.StreamResponse:
    tenant = read_auth(request)
    entity, path = _target(request)
    svc = service(request)
    if tenant is not None:
        assets.in_tenant(svc, entity, tenant)
    row = svc.storage.file(entity, path)
    if row is None:
        raise not_found("file not found")
    resp = web.StreamResponse(
        headers={"ETag": str(row["etag"]), "Content-Type": stored_content_type(row["content_type"])}
    )
    resp.content_length = row["size"]
    await resp.prepare(request)
    with open(svc.files_dir / row["blob"], "rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            await resp.write(chunk)
    await resp.write_eof()
    return resp
