"""`make bench` (second part): how long the console's chart request takes over 100,000 stored readings.

Fills a throw-away data directory with one agent whose one DOUBLE data point has N readings, one a second
up to now, starts the real `southgate serve` on it and times the agent page's chart request over TLS
(keep-alive, admin token) for the whole range and for the last day, and the agent page itself. Writes its own
section of docs/benchmarks.md (the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..service import Service
from ..storage import Reading
from ..testing import RunningSouthgate

ROOT = Path(__file__).resolve().parents[3]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
HEADING = "## southgate console: the chart request"


def fill(data_dir: Path, readings: int) -> str:
    """An agent with `readings` values of DP-bench, one per second, the newest now; returns its id."""
    svc = Service(data_dir)
    try:
        agent = svc.create_agent("bench-node")
        now = svc.clock.now_ms()
        dsc = {
            "configurationId": "CF-bench",
            "dataSources": [
                {
                    "name": "bench",
                    "dataPoints": [{"id": "DP-bench", "name": "level", "type": "DOUBLE", "unit": "m"}],
                }
            ],
        }
        svc.storage.put_dsc(agent["id"], "dsc-bench", 1, dsc, now)
        start = now - (readings - 1) * 1000
        with svc.storage.tx():
            svc.storage.upsert_readings(
                Reading(
                    agent["id"], "DP-bench", start + i * 1000, repr(round(20 + (i % 3600) / 100, 2)), "0", now
                )
                for i in range(readings)
            )
        return str(agent["id"])
    finally:
        svc.close()


def timed(conn: http.client.HTTPConnection, path: str, token: str, runs: int) -> tuple[list[float], bytes]:
    times = []
    body = b""
    for _ in range(runs):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        body = resp.read()
        times.append((time.perf_counter() - t0) * 1000)
        if resp.status != 200:
            raise RuntimeError(f"GET {path} -> {resp.status} {body[:200]!r}")
    return times, body


def measure(readings: int, runs: int, width: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="southgate-console-bench-") as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        agent_id = fill(data, readings)
        fill_s = time.perf_counter() - t0
        with RunningSouthgate(data) as sg:
            conn = sg.connection()
            base = f"/console/agents/{agent_id}"
            rows: dict[str, Any] = {"readings": readings, "width": width, "runs": runs, "fill_s": fill_s}
            for label, query in (("all", "span=all"), ("1d", "span=1d")):
                times, body = timed(
                    conn, f"{base}/series?chart=-&{query}&width={width}", sg.admin_token, runs
                )
                trace = json.loads(body)["traces"][0]
                rows[label] = {
                    "median_ms": statistics.median(times),
                    "max_ms": max(times),
                    "count": trace["count"],
                    "points": len(trace["x"]),
                    "bytes": len(body),
                }
            times, body = timed(conn, base, sg.admin_token, runs)
            rows["page"] = {"median_ms": statistics.median(times), "max_ms": max(times), "bytes": len(body)}
            conn.close()
    return rows


def section(r: dict[str, Any]) -> list[str]:
    def line(label: str, m: dict[str, Any]) -> str:
        return (
            f"| {label} | {m['count']:,} | {m['points']:,} | {m['bytes'] / 1024:.0f} KB "
            f"| {m['median_ms']:.0f} ms | {m['max_ms']:.0f} ms |"
        )

    page = r["page"]
    return [
        HEADING,
        "",
        f"Written by `make bench` (`tools/southgate/console/bench.py`). One agent, {r['readings']:,}",
        "readings of one DOUBLE data point (one a second up to now) in southgate's SQLite database; the",
        f"agent page's chart request (`/console/agents/ID/series`, a chart {r['width']} px wide) over TLS",
        f"on a keep-alive connection, {r['runs']} requests each. The server sends at most the least and the",
        "greatest value of each pixel's bucket (two SQL aggregates, in a worker thread), so the",
        "answer's size depends on the chart's width, not on how many readings the range holds.",
        "",
        "| range | readings in range | points sent | answer | median | slowest |",
        "|---|---:|---:|---:|---:|---:|",
        line("all", r["all"]),
        line("last day", r["1d"]),
        "",
        f"The agent page itself (HTML, {page['bytes'] / 1024:.0f} KB): median {page['median_ms']:.0f} ms.",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {sys.platform}, Python {sys.version.split()[0]}.",
        "",
    ]


def write_section(lines: list[str]) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (or append it), keeping everything else."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines)
    else:
        end = text.find("\n## ", start + len(HEADING))
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + "\n".join(lines) + ("\n" + rest if rest else "")
    BENCHMARKS_MD.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--width", type=int, default=1200, help="chart width in pixels")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    r = measure(args.readings, args.runs, args.width)
    for label in ("all", "1d"):
        m = r[label]
        print(
            f"console chart, {label}: {m['count']:,} readings -> {m['points']:,} points, "
            f"median {m['median_ms']:.1f} ms, slowest {m['max_ms']:.1f} ms",
            flush=True,
        )
    print(f"console agent page: median {r['page']['median_ms']:.1f} ms", flush=True)
    if not args.no_write:
        write_section(section(r))
        print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
