"""Read an asset's aspect back as applications do: IoT Time Series, page by page, with app credentials; or
(`--events`) its events from Event Management, such as the node's health events.

mcagent read --southgate ./sg-data --app app.json --asset ID --aspect UnixNode --from 2026-12-01T00:00:00Z \\
             --to 2026-12-02T00:00:00Z --format csv
mcagent read --base-url https://gateway.eu1.mindsphere.io --app app.json --asset ID --aspect A --from F --to T
mcagent read --southgate ./sg-data --events [--asset ID] [--from F] [--to T]   (default: the last 7 days)

`--southgate DIR` takes the base URL and CA of the southgate serving DIR (and its admin token when no --app
is given); against Insights Hub give `--base-url` and the app credentials (`clientId`, `clientSecret`,
`tenant`, `appName`, `appVersion`, as `southgate app create` writes them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from insights_read import AppCredentials, ReadClient, ReadError, render, render_events, run_sync


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--asset", help="the asset id (entityId, 32 hex); with --events: optional")
    p.add_argument("--aspect", help="the aspect (propertySetName)")
    p.add_argument("--from", dest="from_", metavar="ISO", help="exclusive start, ISO 8601")
    p.add_argument("--to", metavar="ISO", help="inclusive end, ISO 8601")
    p.add_argument(
        "--events",
        action="store_true",
        help="read events (Event Management), oldest first; without --from/--to the service's last 7 days",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--select", help="comma-separated variables (default: all)")
    p.add_argument(
        "--limit", type=int, help="records per request (at most 2000; pages follow the Link header)"
    )
    p.add_argument("--bulk", action="store_true", help="read through IoT TS Bulk (ranges under 90 days)")
    p.add_argument("--base-url", help="the gateway URL, e.g. https://gateway.eu1.mindsphere.io")
    p.add_argument("--app", type=Path, help="app credentials JSON (southgate app create --out app.json)")
    p.add_argument("--ca", help="a CA certificate (PEM) to trust besides the system's")
    p.add_argument("--southgate", type=Path, metavar="DIR", help="read from the southgate serving DIR")


def _client(args: argparse.Namespace) -> ReadClient:
    base_url, ca, token = args.base_url, args.ca, None
    if args.southgate is not None:
        try:
            base_url = base_url or json.loads((args.southgate / "server.json").read_text())["base_url"]
        except (OSError, ValueError, KeyError):
            raise ValueError(
                f"{args.southgate}: no server.json; start `southgate serve --data DIR` once"
            ) from None
        ca = ca or str(args.southgate / "ca.pem")
        if args.app is None:
            token = (args.southgate / "admin-token").read_text().strip()
    if not base_url:
        raise ValueError("give --base-url (or --southgate DIR)")
    if args.app is not None:
        return ReadClient(base_url, credentials=AppCredentials.load(args.app), ca_file=ca)
    if token is None:
        raise ValueError("give --app app.json (app credentials)")
    return ReadClient(base_url, token=token, ca_file=ca)


async def _read(args: argparse.Namespace) -> list[dict[str, Any]]:
    async with _client(args) as client:
        if args.events:
            return await client.events(
                entity=args.asset, from_=args.from_, to=args.to, newest_first=False, size=args.limit or 100
            )
        if args.bulk:
            return await client.bulk_timeseries(
                args.asset, args.aspect, args.from_, args.to, limit=args.limit
            )
        select = [s for s in (args.select or "").split(",") if s] or None
        return await client.timeseries(
            args.asset, args.aspect, args.from_, args.to, limit=args.limit, select=select
        )


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:?\d{2})\Z")


def _when(flag: str, text: str | None) -> datetime | None:
    """--from/--to as a UTC time: ISO 8601 with a zone (any digits of a second's fraction, +hh:mm or +hhmm),
    or a date (its midnight, UTC). Parsed alike on every Python from 3.10 (whose fromisoformat is strict)."""
    if text is None:
        return None
    raw = text.strip()
    m = _TIME.match(raw)
    try:
        if _DATE.match(raw):
            return datetime.fromisoformat(raw).replace(tzinfo=timezone.utc)
        if m is None:
            raise ValueError
        day, clock, frac, zone = m.groups()
        zone = "+00:00" if zone in "Zz" else zone[:3] + ":" + zone[-2:]
        value = datetime.fromisoformat(f"{day}T{clock}.{(frac or '')[:6].ljust(6, '0')}{zone}")
    except ValueError:
        raise ValueError(
            f"{flag} {text!r}: not an ISO 8601 time with a zone, e.g. 2026-12-01T00:00:00Z"
        ) from None
    return value.astimezone(timezone.utc)


def _missing(args: argparse.Namespace) -> str | None:
    if args.events:
        if args.limit is not None and not 1 <= args.limit <= 100:
            return "--limit with --events: events per request, 1 to 100"
        return None
    missing = [
        f"--{n}"
        for n in ("asset", "aspect", "from", "to")
        if getattr(args, n.replace("from", "from_")) is None
    ]
    return f"the time series read needs {', '.join(missing)} (or read --events)" if missing else None


def run(args: argparse.Namespace) -> int:
    problem = _missing(args)
    if problem is None:
        try:
            args.from_, args.to = _when("--from", args.from_), _when("--to", args.to)
        except ValueError as exc:
            problem = str(exc)
    if problem is None and args.from_ is not None and args.to is not None and args.from_ >= args.to:
        problem = "--from must be before --to"
    if problem:
        print(f"mcagent read: {problem}", file=sys.stderr)
        return 2
    try:
        records = run_sync(_read(args))
    except (ValueError, OSError, ReadError) as exc:
        print(f"mcagent read: {exc}", file=sys.stderr)
        return 1
    print(render_events(records, args.format) if args.events else render(records, args.format))
    return 0
