"""Load test at increasing concurrency: locust headless per user count, then CSVs, a summary and plots.

    python -m loadtest.run                       # starts the service on models/ (MT_ settings apply)
    python -m loadtest.run --url http://host:8000 --users 1,8,32,64 --duration 30

For each user count, locust runs loadtest/locustfile.py headless for --duration seconds (all users start
at once; statistics are reset once they have). The report folder gets locust's CSVs per step
(u<N>_stats.csv, ...), summary.csv, summary.md, throughput.png and latency.png. Options after ``--``
go to locust unchanged (e.g. ``-- --mix native=1 --pairs de-en``); LOADTEST_* variables work too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from loadtest.server import ServiceProcess

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"


def run_step(url: str, users: int, duration_s: float, out: Path, locust_args: list[str]) -> dict:
    """One headless locust run; returns the aggregated statistics plus the scenario's own counts."""
    prefix = out / f"u{users:03d}"
    summary_json = out / f"u{users:03d}_texts.json"
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{max(1, round(duration_s))}s",
               "--reset-stats", "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
               "--exit-code-on-error", "0", "--summary-json", str(summary_json), *locust_args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(out / f"u{users:03d}_locust.log", "wb") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(f"locust exited with {completed.returncode}; see {out}/u{users:03d}_locust.log")
    stats = read_stats(Path(f"{prefix}_stats.csv"))
    counts = json.loads(summary_json.read_text()) if summary_json.exists() else {}
    aggregated = stats["Aggregated"]
    row = {"users": users, "requests": int(aggregated["Request Count"]), "failures": int(aggregated["Failure Count"]),
           "requests_per_s": float(aggregated["Requests/s"]),
           "texts_per_s": counts.get("texts", 0) / counts["seconds"] if counts.get("seconds") else None,
           "p50_ms": _number(aggregated["50%"]), "p95_ms": _number(aggregated["95%"]),
           "p99_ms": _number(aggregated["99%"]), "mean_ms": _number(aggregated["Average Response Time"]),
           "max_ms": _number(aggregated["Max Response Time"]),
           "locust_cpu_pct": 100 * ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / elapsed}
    row["by_name"] = {name: {"requests": int(s["Request Count"]), "failures": int(s["Failure Count"]),
                             "p50_ms": _number(s["50%"]), "p95_ms": _number(s["95%"]), "p99_ms": _number(s["99%"])}
                      for name, s in stats.items() if name != "Aggregated"}
    return row


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def _number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # locust writes N/A when nothing was measured


def write_report(rows: list[dict], out: Path, meta: dict) -> None:
    fields = ["users", "requests", "failures", "requests_per_s", "texts_per_s", "p50_ms", "p95_ms", "p99_ms",
              "mean_ms", "max_ms", "locust_cpu_pct", "service_cpu_pct"]
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Load test {meta['started']}", "", f"Target: {meta['url']}"
             + (f" (started by loadtest.run on {meta['models_dir']})" if meta.get("models_dir") else ""),
             f"Steps: {meta['duration_s']} s per user count, all users started at once, statistics reset after "
             f"spawning. Scenario options: {' '.join(meta['locust_args']) or 'defaults'}.", "",
             "| users | requests | failures | requests/s | texts/s | p50 ms | p95 ms | p99 ms | locust CPU % |"
             + (" service CPU % |" if any("service_cpu_pct" in r for r in rows) else ""),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if any("service_cpu_pct" in r for r in rows)
                                                                  else "")]
    for r in rows:
        line = (f"| {r['users']} | {r['requests']} | {r['failures']} | {r['requests_per_s']:.1f} | "
                f"{_fmt(r['texts_per_s'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} | "
                f"{r['locust_cpu_pct']:.0f} |")
        if "service_cpu_pct" in r:
            line += f" {r['service_cpu_pct']:.0f} |"
        lines.append(line)
    lines += ["", "Per request kind (p50 / p95 / p99 ms, requests):", "",
              "| users | " + " | ".join(sorted(rows[0]["by_name"])) + " |",
              "|---:|" + "---|" * len(rows[0]["by_name"])]
    for r in rows:
        cells = [f"{_fmt(s['p50_ms'])} / {_fmt(s['p95_ms'])} / {_fmt(s['p99_ms'])} ({s['requests']})"
                 for _, s in sorted(r["by_name"].items())]
        lines.append(f"| {r['users']} | " + " | ".join(cells) + " |")
    lines += ["", "![throughput](throughput.png) ![latency](latency.png)", ""]
    (out / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    plot(rows, out)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [r["users"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(users, [r["requests_per_s"] for r in rows], "o-", label="requests/s")
    if all(r["texts_per_s"] is not None for r in rows):
        ax.plot(users, [r["texts_per_s"] for r in rows], "s--", label="texts/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(users, [str(u) for u in users])
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("per second")
    ax.set_title("Load test: throughput")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax.plot(users, [r[key] for r in rows], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(users, [str(u) for u in users])
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Load test: latency percentiles")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    locust_args: list[str] = []
    if "--" in argv:
        argv, locust_args = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("URL") or None,
                        help="service to load (default: start one on --models-dir)")
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("MT_MODELS_DIR", "models")))
    parser.add_argument("--users", default="1,8,32,64", help="user counts, in order")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per user count")
    parser.add_argument("--out", type=Path, help="report folder (default: loadtest/reports/<time>)")
    args = parser.parse_args(argv)

    started = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or HERE / "reports" / started
    out.mkdir(parents=True, exist_ok=True)
    service = None
    if args.url is None:
        service = ServiceProcess(args.models_dir, out / "service.log").start()
        print(f"service on {args.models_dir} ready at {service.url}", flush=True)
    url = args.url or service.url
    rows = []
    try:
        for users in map(int, args.users.split(",")):
            cpu_before = service.cpu_seconds() if service else None
            t0 = time.monotonic()
            row = run_step(url, users, args.duration, out, locust_args)
            if service:
                row["service_cpu_pct"] = 100 * (service.cpu_seconds() - cpu_before) / (time.monotonic() - t0)
            rows.append(row)
            print(f"{users:3} users: {row['requests_per_s']:7.1f} req/s  texts/s {_fmt(row['texts_per_s'])}  "
                  f"p50 {_fmt(row['p50_ms'])} p95 {_fmt(row['p95_ms'])} p99 {_fmt(row['p99_ms'])} ms  "
                  f"failures {row['failures']}/{row['requests']}", flush=True)
    finally:
        if service:
            service.stop()
    write_report(rows, out, {"started": started, "url": url, "models_dir": None if args.url else str(args.models_dir),
                             "duration_s": args.duration, "locust_args": locust_args})
    (out / "summary.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(f"report: {out}/summary.md", flush=True)
    return out


if __name__ == "__main__":
    main()
