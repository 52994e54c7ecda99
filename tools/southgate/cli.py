"""Command line of southgate: serve, agent, asset, app, timeseries/events/files, fault, settings."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from . import apps, assets, faults, readback
from .certs import write_private
from .clock import parse_iso
from .errors import ApiError
from .service import Service


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="data directory (created with mode 0700)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="southgate", description="A local MindConnect service for agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the MindConnect APIs (HTTPS with a development CA)")
    _data(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    s.add_argument("--plain-http", action="store_true", help="serve plain HTTP instead of HTTPS")
    s.add_argument(
        "--auto-assets",
        action="store_true",
        help="create the asset, aspect and variable a mapping names (the real service needs them modelled)",
    )
    s.add_argument(
        "--cert-name",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a host name or address boards reach this machine by: put into the certificate and the URL",
    )

    am = sub.add_parser(
        "asset", help="model assets: aspects and typed variables mappings are checked against"
    )
    amsub = am.add_subparsers(dest="asset_command", required=True)
    ac = amsub.add_parser("create", help="create an asset (prints its 32-hex id)")
    _data(ac)
    ac.add_argument("--tenant")
    ac.add_argument("--name", help="the asset's name (default: the board's name with --board)")
    ac.add_argument("--id", dest="asset_id", metavar="HEX32", help="the asset id (default: a new one)")
    ac.add_argument(
        "--variable",
        action="append",
        default=[],
        metavar="ASPECT.VAR:TYPE[:UNIT]",
        help="a variable of an aspect, e.g. Env.Temperature:DOUBLE:°C (repeat it)",
    )
    ac.add_argument(
        "--board", type=Path, help="model what this board.json maps onto (its dsc.entityId and data points)"
    )
    al = amsub.add_parser("list", help="list assets with their aspects and variables")
    _data(al)
    al.add_argument("--tenant")

    ap = sub.add_parser("app", help="app credentials for Token Manager (what applications read with)")
    apsub = ap.add_subparsers(dest="app_command", required=True)
    apc = apsub.add_parser("create", help="create app credentials and write app.json (owner-only)")
    _data(apc)
    apc.add_argument("--tenant")
    apc.add_argument("--name", required=True)
    apc.add_argument("--version", default="1.0.0")
    apc.add_argument("--out", type=Path, help="write app.json here (default: stdout)")
    apl = apsub.add_parser("list", help="list app credentials (ids only, never secrets)")
    _data(apl)

    a = sub.add_parser("agent", help="manage agents (works with or without a running server)")
    asub = a.add_subparsers(dest="agent_command", required=True)
    c = asub.add_parser("create", help="create an agent and write its agentconfig.json")
    _data(c)
    c.add_argument("--name", required=True)
    c.add_argument("--tenant")
    c.add_argument("--entity-id", help="32-hex asset id the agent is bound to (default: a new asset)")
    c.add_argument("--base-url", help="base URL written into the config (default: the last served URL)")
    c.add_argument("--out", type=Path, help="write the config here (default: stdout)")
    ls = asub.add_parser("list", help="list agents")
    _data(ls)
    cfg = asub.add_parser("config", help="print (a fresh) boarding configuration of an agent")
    _data(cfg)
    cfg.add_argument("--agent", required=True)
    cfg.add_argument("--out", type=Path)
    off = asub.add_parser("offboard", help="offboard an agent (it needs a new IAT to onboard again)")
    _data(off)
    off.add_argument("--agent", required=True)

    agent_help = "the agent's id or name (default: the only agent in --data)"
    for what in ("timeseries", "events", "files"):
        r = sub.add_parser(what, help=f"read back stored {what} of an agent")
        _data(r)
        r.add_argument("--agent", help=agent_help)
        if what == "timeseries":
            r.add_argument(
                "--asset", help="read an asset's aspect as applications do (needs a running serve)"
            )
            r.add_argument("--aspect", help="the aspect to read with --asset")
        r.add_argument("--from", dest="from_", metavar="ISO")
        r.add_argument("--to", metavar="ISO")
        r.add_argument("--format", choices=("table", "json", "csv"), default="table")
    d = sub.add_parser("diagnostics", help="read the diagnostics (dropped values and why) of an agent")
    _data(d)
    d.add_argument("--agent", help=agent_help)
    d.add_argument("--format", choices=("table", "json", "csv"), default="table")

    f = sub.add_parser("fault", help="fault queue: make the next N matching requests fail")
    fsub = f.add_subparsers(dest="fault_command", required=True)
    fa = fsub.add_parser("add", help="add a fault")
    _data(fa)
    fa.add_argument("--path", required=True, help="path prefix, or a glob with * and ?")
    fa.add_argument("--method")
    fa.add_argument("--count", type=int, default=1)
    fa.add_argument("--kind", choices=faults.KINDS, default="status")
    fa.add_argument("--status", type=int)
    fa.add_argument("--bytes", type=int, help="close_after_bytes: bytes of the body to read first")
    fa.add_argument("--seconds", type=float, help="stall: seconds to wait")
    fa.add_argument("--retry-after", type=int, help="Retry-After seconds for 429/503")
    fl = fsub.add_parser("list", help="list pending faults")
    _data(fl)
    fc = fsub.add_parser("clear", help="remove all faults")
    _data(fc)

    st = sub.add_parser(
        "settings", help="show or change settings: southgate settings --data DIR [key=value ...]"
    )
    _data(st)
    st.add_argument("changes", nargs="*", metavar="key=value")
    return parser


def _range(args: argparse.Namespace) -> tuple[int | None, int | None]:
    lo = parse_iso(args.from_) if args.from_ else None
    hi = parse_iso(args.to) if args.to else None
    return lo, hi


def _check_out(out: Path | None) -> None:
    """--out must be writable before anything is created: an app's secret is shown once, in that file."""
    if out is not None and not out.parent.is_dir():
        raise ValueError(f"--out {out}: the directory {out.parent} does not exist (nothing was created)")


def _write(text: str, out: Path | None) -> None:
    if out is None:
        print(text)
    else:
        write_private(out, (text + "\n").encode())  # agent configs carry the IAT: owner-only
        print(f"southgate: wrote {out}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .app import serve

        names = list(args.cert_name)
        if args.host in ("", "0.0.0.0", "::") and not names:
            names.append(lan_address())
        elif args.host not in ("", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"):
            names.append(args.host)
        svc = Service(args.data, tuple(names))
        svc.auto_assets = bool(args.auto_assets)
        if args.host in ("", "0.0.0.0", "::"):
            svc.public_host = names[0]  # the URL boards on the LAN can reach, not 127.0.0.1
        try:
            asyncio.run(serve(svc, args.host, args.port, args.plain_http))
        except OSError as exc:
            print(f"southgate: cannot serve: {exc}", file=sys.stderr)
            return 1
        return 0

    svc = Service(args.data)
    try:
        return _run_offline(args, svc)
    finally:
        svc.close()


def lan_address() -> str:
    """This machine's address on the network a board would use (the source address of the default
    route; a UDP connect sends nothing), 127.0.0.1 when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, only picks an interface
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _asset_command(args: argparse.Namespace, svc: Service) -> int:
    if args.asset_command == "list":
        rows = []
        for a in svc.storage.assets(args.tenant):
            listed = [
                f"{asp}.{p['property']}:{p['type']}" + (f":{p['unit']}" if p["unit"] else "")
                for asp in svc.storage.aspect_names(a["entity_id"])
                for p in svc.storage.props(a["entity_id"], asp)
            ]
            rows.append(
                {
                    "id": a["entity_id"],
                    "name": a["name"],
                    "tenant": a["tenant"],
                    "variables": " ".join(listed),
                }
            )
        print(readback.render(rows, "table", ["id", "name", "tenant", "variables"]))
        return 0
    variables = [assets.parse_variable(v) for v in args.variable]
    asset_id, name = args.asset_id, args.name
    if args.board is not None:
        board_entity, board_vars = assets.from_board(args.board)
        if board_entity is None:
            raise ValueError(f"{args.board} maps no data point (it has no dsc.entityId or point mappings)")
        if asset_id is not None and asset_id != board_entity:
            raise ValueError(f"--id {asset_id} differs from the board's dsc.entityId {board_entity}")
        asset_id = board_entity
        variables = board_vars + variables
        name = name or json.loads(args.board.read_text()).get("board", "board")
    if not name:
        raise ValueError("give --name (or --board)")
    if not variables:
        raise ValueError("give at least one --variable ASPECT.VAR:TYPE[:UNIT] (or --board)")
    created = assets.create(svc, args.tenant, name, variables, asset_id)
    print(created["assetId"])
    print(
        "southgate: asset {} ({}) in tenant {}: {} variable(s)".format(
            created["assetId"], created["name"], created["tenantId"], len(variables)
        ),
        file=sys.stderr,
    )
    return 0


def _app_command(args: argparse.Namespace, svc: Service) -> int:
    if args.app_command == "list":
        rows = [
            {
                "clientId": a["client_id"],
                "tenant": a["tenant"],
                "appName": a["app_name"],
                "appVersion": a["app_version"],
            }
            for a in svc.storage.apps()
        ]
        print(readback.render(rows, "table", ["clientId", "tenant", "appName", "appVersion"]))
        return 0
    _check_out(args.out)
    creds = apps.create_app(svc, args.tenant, args.name, args.version)
    _write(json.dumps(creds, indent=2), args.out)  # holds the client secret: owner-only, never logged
    print(
        f"southgate: app {creds['appName']} {creds['appVersion']} in tenant {creds['tenant']}",
        file=sys.stderr,
    )
    return 0


def _asset_timeseries(args: argparse.Namespace, svc: Service) -> int:
    """An asset's aspect read through the IoT Time Series API of the running server, with the read client."""
    from insights_read import ReadClient, render, run_sync

    if not args.aspect:
        raise ValueError("--asset needs --aspect")
    lo = args.from_ or "1970-01-01T00:00:00Z"
    hi = args.to or "2999-12-31T23:59:59Z"

    async def read() -> list[dict[str, Any]]:
        async with ReadClient(
            svc.base_url, token=svc.keys.admin_token, ca_file=str(svc.keys.ca_pem)
        ) as client:
            return await client.timeseries(args.asset, args.aspect, lo, hi)

    print(render(run_sync(read()), args.format))
    return 0


def _agent_id(svc: Service, given: str | None) -> str:
    """--agent: an id, a name, or nothing when the data directory holds one agent."""
    agents = svc.storage.agents()
    if given is None:
        if len(agents) == 1:
            return str(agents[0]["id"])
        names = ", ".join(f"{a['name']} ({a['id']})" for a in agents) or "none yet"
        raise ValueError(f"give --agent: this data directory has {len(agents)} agents: {names}")
    match = [a for a in agents if a["id"] == given] or [a for a in agents if a["name"] == given]
    if len(match) != 1:
        why = "no agent" if not match else f"{len(match)} agents"
        raise ValueError(f"{why} with id or name {given[:64]!r} (southgate agent list --data DIR)")
    return str(match[0]["id"])


def _run_offline(args: argparse.Namespace, svc: Service) -> int:
    if args.command == "agent":
        if args.agent_command == "create":
            _check_out(args.out)
            agent = svc.create_agent(args.name, args.tenant, args.entity_id)
            config = svc.boarding_config(agent["id"], args.base_url)
            _write(json.dumps(config, indent=2), args.out)
            print(
                "southgate: agent {} ({}) in tenant {}, asset {}".format(
                    agent["id"], agent["name"], agent["tenant"], agent["entity_id"]
                ),
                file=sys.stderr,
            )
        elif args.agent_command == "list":
            rows = [dict(svc.agent_json(a), status=a["status"]) for a in svc.storage.agents()]
            print(readback.render(rows, "table", ["id", "name", "tenant", "status", "entityId"]))
        elif args.agent_command == "config":
            _write(json.dumps(svc.boarding_config(args.agent), indent=2), args.out)
        elif args.agent_command == "offboard":
            svc.offboard(args.agent)
            print(f"southgate: agent {args.agent} offboarded", file=sys.stderr)
        return 0
    if args.command == "asset":
        return _asset_command(args, svc)
    if args.command == "app":
        return _app_command(args, svc)
    if args.command == "timeseries" and args.asset:
        return _asset_timeseries(args, svc)
    if args.command in ("timeseries", "events", "files"):
        agent_id = _agent_id(svc, args.agent)
        lo, hi = _range(args)
        rows = getattr(readback, args.command)(svc.storage, agent_id, lo, hi)
        print(readback.render(rows, args.format, readback.COLUMNS[args.command]))
        return 0
    if args.command == "diagnostics":
        rows = readback.diagnostics(svc.storage, _agent_id(svc, args.agent))
        print(readback.render(rows, args.format, ["timestamp", "severity", "state", "source", "message"]))
        return 0
    if args.command == "fault":
        if args.fault_command == "add":
            spec: dict[str, Any] = {"path": args.path, "count": args.count, "kind": args.kind}
            for key in ("method", "status", "bytes", "seconds", "retry_after"):
                if getattr(args, key) is not None:
                    spec[key] = getattr(args, key)
            path, method, count, kind, params = faults.validate_spec(spec)
            fid = svc.storage.add_fault(path, method, count, kind, params, svc.clock.now_ms())
            print(f"southgate: fault {fid} added", file=sys.stderr)
        elif args.fault_command == "list":
            rows = [faults.public(f) for f in svc.storage.faults()]
            print(
                readback.render(
                    rows, "table", ["id", "path", "method", "remaining", "kind", "status", "bytes", "seconds"]
                )
            )
        else:
            print(f"southgate: {svc.storage.clear_faults()} fault(s) cleared", file=sys.stderr)
        return 0
    if args.command == "settings":
        changes: dict[str, Any] = {}
        for item in args.changes:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"settings changes are key=value, got {item!r}")
            try:
                changes[key] = json.loads(raw)
            except json.JSONDecodeError:
                changes[key] = raw
        if changes:
            svc.change_settings(changes)
        print(json.dumps(svc.settings.to_dict(), indent=2))
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    from insights_read import ReadError

    args = build_parser().parse_args(argv)
    try:
        try:
            return run(args)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a traceback when Python exits
    except ApiError as exc:
        print(f"southgate: {exc.message}", file=sys.stderr)
        return 1
    except aiohttp.ClientConnectionError:  # the read commands go through the running server
        print("southgate: cannot reach the server: is `southgate serve --data DIR` running?", file=sys.stderr)
        return 1
    except (ReadError, aiohttp.ClientError) as exc:
        print(f"southgate: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Whoever read the output stopped (`| head`): end quietly; stdout goes to the null device so the
        # interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file or directory named on the command line
        print(f"southgate: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"southgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
