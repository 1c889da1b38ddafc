"""End-to-end service benchmark: throughput and latency at 1-64 concurrent clients, batching on vs off.

    python -m bench.service --model-dir models/de-en --out bench/results

One service subprocess per configuration (``on``: the service's defaults, the continuous scheduler; ``off``: one
sentence at a time; ``batch``, ``nowait``, ``wait10``, when asked for: the request-level batcher with its default
wait, none, or 10 ms), all started up front and idle while another is measured. For each client count the
configurations are measured back to back, their order alternating from one count to the next, so slow drift of the
machine hits both alike.

The clients are closed loops (send, wait for the answer, send again) over keep-alive connections, each
request one sentence on POST /v1/translate with an explicit beam size, drawn in turn from the same fixed
sample of the corpus as bench.engine uses. The client is a minimal asyncio HTTP/1.1 client rather than
httpx or locust, because it shares the cores with the service: its CPU share is measured and reported.
Throughput and latency count the requests that finish inside the measured window (after the warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import default_corpus, load_sentences, machine, markdown_table, write_csv
from inference.card import read_card
from loadtest.server import ServiceProcess, models_folder

CONFIGS = {
    "on": {},  # the service's defaults (the continuous scheduler, MT_MAX_ACTIVE_ROWS=128)
    "off": {"MT_MAX_ACTIVE_ROWS": "1", "MT_MAX_BATCH_SENTENCES": "1"},  # one sentence at a time, either scheduler
    "batch": {"MT_SCHEDULER": "batch"},  # the request-level batcher (the default before 2026-12-05)
    "nowait": {"MT_SCHEDULER": "batch", "MT_MAX_WAIT_MS": "0"},
    "wait10": {"MT_SCHEDULER": "batch", "MT_MAX_WAIT_MS": "10"},  # the batcher's default before 2026-11-27
}


# ---- a minimal HTTP/1.1 client ----------------------------------------------------------------------------------

def request_bytes(host: str, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if match is None:
        raise RuntimeError("response without Content-Length")
    return status, await reader.readexactly(int(match.group(1)))


async def client(port: int, requests: list[bytes], offset: int, measure_from: float, stop_at: float,
                 latencies: list[float], errors: list[str], indices: list[int] | None = None,
                 local_host: str | None = None) -> None:
    """One closed loop over one keep-alive connection, sending ``requests`` in turn from ``offset``.

    ``indices``, when given, receives the position in ``requests`` of each request whose latency is recorded
    (to tell kinds of requests apart); ``local_host`` is the loopback address to connect from (the service
    tells clients apart by their address).
    """
    local_addr = (local_host, 0) if local_host else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local_addr)
    index = offset
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            position = index % len(requests)
            writer.write(requests[position])
            index += 1
            status, body = await read_response(reader)
            finished = time.perf_counter()
            if status != 200 or b'"translations"' not in body:
                errors.append(f"HTTP {status}: {body[:200]!r}")
            elif measure_from <= finished <= stop_at:
                latencies.append(finished - started)
                if indices is not None:
                    indices.append(position)
    finally:
        writer.close()


def histogram_sum_count(metrics: str, name: str) -> tuple[float, float]:
    total = sum(float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", metrics, re.MULTILINE))
    count = sum(float(v) for v in re.findall(rf"^{name}_count(?:{{[^}}]*}})? (\S+)$", metrics, re.MULTILINE))
    return total, count


def measure(service: ServiceProcess, requests: list[bytes], clients: int, warmup_s: float, duration_s: float) -> dict:
    """One closed-loop run against one service; latency percentiles, throughput, CPU shares, batch sizes."""
    latencies: list[float] = []
    errors: list[str] = []
    before_metrics = service.metrics()
    cpu_client, cpu_service = time.process_time(), service.cpu_seconds()
    now = time.perf_counter()
    measure_from, stop_at = now + warmup_s, now + warmup_s + duration_s

    async def run() -> None:
        await asyncio.gather(*(client(service.port, requests, i * len(requests) // clients, measure_from, stop_at,
                                      latencies, errors) for i in range(clients)))

    # CPU is sampled over the whole run (warm-up included): the closest cheap approximation of the window.
    asyncio.run(run())
    elapsed = time.perf_counter() - now
    cpu_client, cpu_service = time.process_time() - cpu_client, service.cpu_seconds() - cpu_service
    after_metrics = service.metrics()
    batch_sum, batch_count = (a - b for a, b in zip(histogram_sum_count(after_metrics, "mt_batch_size_sentences"),
                                                    histogram_sum_count(before_metrics, "mt_batch_size_sentences")))
    wait_sum, wait_count = (a - b for a, b in zip(histogram_sum_count(after_metrics, "mt_queue_wait_seconds"),
                                                  histogram_sum_count(before_metrics, "mt_queue_wait_seconds")))
    infer_sum, _ = (a - b for a, b in zip(histogram_sum_count(after_metrics, "mt_batch_inference_seconds"),
                                          histogram_sum_count(before_metrics, "mt_batch_inference_seconds")))
    ms = np.array(latencies) * 1000
    return {
        "clients": clients, "requests": len(latencies), "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "sentences_per_s": len(latencies) / duration_s,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "mean_ms": float(ms.mean()) if len(ms) else None,
        "mean_batch": batch_sum / batch_count if batch_count else None,
        "mean_queue_wait_ms": 1000 * wait_sum / wait_count if wait_count else None,
        "decoder_busy_pct": 100 * infer_sum / elapsed,
        "service_cpu_pct": 100 * cpu_service / elapsed, "client_cpu_pct": 100 * cpu_client / elapsed,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/de-en"))
    parser.add_argument("--corpus", default=default_corpus(), help="sentence file with {lang} in its path")
    parser.add_argument("--sentences", type=int, default=256, help="sentences in the fixed sample")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--configs", default="on,off", help=f"from {', '.join(CONFIGS)}")
    parser.add_argument("--beam", type=int, default=1, help="beam size of every request")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--env", action="append", default=[], metavar="MT_NAME=VALUE",
                        help="extra service setting for every configuration (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)

    card = read_card(args.model_dir)
    texts = load_sentences(args.corpus, card.source_language, args.sentences)
    requests = [request_bytes("127.0.0.1", "/v1/translate", json.dumps(
        {"texts": [t], "source": card.source_language, "target": card.target_language,
         "beam_size": args.beam}).encode()) for t in texts]
    extra = dict(item.split("=", 1) for item in args.env)
    configs = args.configs.split(",")
    args.out.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        models = models_folder([args.model_dir], Path(tmp) / "models")
        services = {name: ServiceProcess(models, args.out / f"service-{name}.log", {**extra, **CONFIGS[name]})
                    for name in configs}
        try:
            for name, service in services.items():
                service.start()
                print(f"service {name} ready on {service.url} ({CONFIGS[name] or 'defaults'})", flush=True)
            for level, clients in enumerate(map(int, args.clients.split(","))):
                for name in (configs if level % 2 == 0 else configs[::-1]):
                    row = {"config": name, **measure(services[name], requests, clients, args.warmup_s,
                                                     args.duration_s)}
                    rows.append(row)
                    print(f"{name:6} {clients:3} clients: {row['sentences_per_s']:7.1f} sent/s  p50 "
                          f"{row['p50_ms'] or 0:7.1f} ms  p99 {row['p99_ms'] or 0:7.1f} ms  batch "
                          f"{row['mean_batch'] or 0:5.1f}"
                          f"  service CPU {row['service_cpu_pct']:3.0f}%  client CPU {row['client_cpu_pct']:3.0f}%"
                          f"  errors {row['errors']}", flush=True)
        finally:
            for service in services.values():
                service.stop()

    ratios = []
    if "on" in configs and "off" in configs:
        for clients in map(int, args.clients.split(",")):
            on = next(r for r in rows if r["config"] == "on" and r["clients"] == clients)
            off = next(r for r in rows if r["config"] == "off" and r["clients"] == clients)
            ratios.append({"clients": clients,
                           "throughput_on_over_off": on["sentences_per_s"] / max(off["sentences_per_s"], 1e-9),
                           "p50_on_over_off": (on["p50_ms"] or 0) / (off["p50_ms"] or 1),
                           "p99_on_over_off": (on["p99_ms"] or 0) / (off["p99_ms"] or 1)})
        for r in ratios:
            print(f"on/off at {r['clients']:3} clients: throughput x{r['throughput_on_over_off']:.2f}, "
                  f"p50 x{r['p50_on_over_off']:.2f}, p99 x{r['p99_on_over_off']:.2f}", flush=True)
    summary = {"machine": machine(), "model": card.id, "beam": args.beam, "sentences": len(texts),
               "warmup_s": args.warmup_s, "duration_s": args.duration_s, "configs": {c: CONFIGS[c] for c in configs},
               "env": extra, "rows": rows, "ratios": ratios}
    write_csv(args.out / "service.csv", rows)
    (args.out / "service.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (args.out / "service.md").write_text(service_markdown(summary), encoding="utf-8")
    print(f"wrote {args.out}/service.csv, service.json, service.md", flush=True)
    return summary


def service_markdown(summary: dict) -> str:
    columns = [("config", "batching"), ("clients", "clients"), ("sentences_per_s", "sentences/s"),
               ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"), ("mean_batch", "mean batch"),
               ("mean_queue_wait_ms", "mean queue wait ms"), ("decoder_busy_pct", "decoder busy %"),
               ("service_cpu_pct", "service CPU %"), ("client_cpu_pct", "client CPU %"), ("errors", "errors")]
    rows = sorted(summary["rows"], key=lambda r: (list(summary["configs"]).index(r["config"]), r["clients"]))
    lines = [f"Model {summary['model']}, beam {summary['beam']}, one sentence per request (POST /v1/translate), "
             f"{summary['sentences']} distinct sentences; {summary['warmup_s']} s warm-up + "
             f"{summary['duration_s']} s measured per point.", "", markdown_table(rows, columns), ""]
    if summary["ratios"]:
        lines += ["Batching on / off:", "", markdown_table(summary["ratios"], [
            ("clients", "clients"), ("throughput_on_over_off", "throughput ratio"),
            ("p50_on_over_off", "p50 ratio"), ("p99_on_over_off", "p99 ratio")]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
