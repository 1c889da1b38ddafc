"""Scheduler benchmark (issue 14): the step-level continuous scheduler against the request-level batcher.

    python -m bench.scheduling --model-dir models/de-en --configs batch,continuous \\
        --scenarios singles,saturated,lone,fairness,mixed --duration-s 10 --warmup-s 2 --out bench/results

One service subprocess per configuration (``batch``: MT_SCHEDULER=batch; ``continuous``: MT_SCHEDULER=continuous;
``continuous-uncapped``: the continuous scheduler without its bulk cap, for the fairness trade), all started up
front with the translation cache off. Each measurement point runs on every configuration back to
back, their order alternating from one point to the next, so slow drift of the machine hits all alike. Clients
are bench.service's closed loops (send, wait for the answer, send again) over keep-alive connections, drawing in
turn from one fixed sample of the corpus; a point counts the requests that finish inside its measured window
(after the warm-up), and requests still in flight at its end are abandoned (the service cancels them).

Scenarios and their targets (printed and written, never asserted):

- ``singles``: 32 clients sending one sentence per request, against 4 clients sending the same sentences as
  lists of 64 texts (enough to keep the service busy). Sentences/s, singles / lists >= 0.9x, at beam 1 and at
  the model's default beam (sent explicitly): a service that schedules sentences, not requests, should not care
  how clients package them.
- ``saturated``: 64 single-sentence clients, against the engine's best offline throughput at the same beam
  (bench.engine's onnx backend: ``SentenceTranslator.translate_ids`` on length-sorted batches of 32, 64 and 128
  sentences of the same sample, best taken) >= 0.85x. The engine runs in its own process before the services
  start, so no threads compete.
- ``lone``: one client, single sentences, beam 1: its p50 <= the engine's batch-1 p50 (same process as above)
  + 1.5 ms, the cost the scheduler and HTTP may add to a request that has the service to itself.
- ``fairness``: one client sending single sentences (default beam) while a second client, from another loopback
  address (the service tells clients apart by address), keeps 1,000 sentences in flight. Its p95 against its
  p95 on the idle service, measured the same way <= 4x. The 1,000 sentences are distinct (the service decodes
  a request's repeated sentences once), drawn from the whole corpus file rather than the sample (Multi30k's val
  set has 1,014), 20 to a text. They go as two requests of 500, each on its own connection and sent again as
  soon as it is answered: at about 75 characters a sentence, one request of 1,000 would exceed
  MT_MAX_REQUEST_CHARS (50,000). Where no single-sentence request finishes within the window at all (the batcher
  on a slow machine), its latency exceeded the window, and the ratio is reported as at least window / idle p95.
- ``mixed``: 16 clients, every fourth request one long sentence (>= 40 SentencePiece tokens: two or three
  sample sentences joined with ", " and " und ", checked to stay one sentence for the service's segmenter),
  the others one shorter sample sentence; default beam. The short requests' p99 under the continuous
  scheduler <= 0.5x under the batcher, where a short sentence waits for the longest sentence of its batch.

Writes scheduling.json (with the machine), scheduling.csv and scheduling.md to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from bench.common import default_corpus, load_sentences, machine, markdown_table, write_csv
from bench.service import client, request_bytes
from inference.card import ModelCard, read_card
from loadtest.server import ServiceProcess, models_folder
from service.segmenter import segment

CONFIGS = {
    "batch": {"MT_SCHEDULER": "batch"},
    "continuous": {"MT_SCHEDULER": "continuous"},
    # The continuous scheduler without the bulk cap: bulk requests keep every row while a small one decodes.
    "continuous-uncapped": {"MT_SCHEDULER": "continuous", "MT_SHARED_BULK_ROWS": "100000"},
    "continuous-h11": {"MT_SCHEDULER": "continuous", "MT_HTTP_PARSER": "h11", "MT_EVENT_LOOP": "asyncio"},
}
SCENARIOS = ("singles", "saturated", "lone", "fairness", "mixed")

TARGET_SINGLES = 0.9  # singles / lists throughput
TARGET_SATURATION = 0.85  # saturated service / best offline engine throughput
TARGET_LONE_SLACK_MS = 1.5  # lone p50 - engine batch-1 p50
TARGET_FAIRNESS = 4.0  # loaded / idle p95 of a single-sentence client
TARGET_MIXED = 0.5  # continuous / batch p99 of the short requests

HOST, OTHER_HOST = "127.0.0.1", "127.0.0.2"
BULK_SENTENCES_PER_TEXT = 20
BULK_TIMEOUT_S = 120.0  # the service's default deadline (30 s) is shorter than a wait behind 1,000 sentences


# ---- the workload ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One HTTP request as sent, what kind it is, and how many sentences the service will split it into."""

    kind: str
    data: bytes
    sentences: int


@dataclass(frozen=True)
class Group:
    """``clients`` closed loops from one address, drawing in turn from ``requests``."""

    clients: int
    requests: list[Request]
    host: str = HOST


@dataclass(frozen=True)
class Point:
    """One measurement: groups of clients running together against one service."""

    scenario: str
    name: str
    beam: int | None  # None: the model's default (no beam_size in the requests)
    groups: list[Group]


def count_sentences(texts: list[str], language: str) -> int:
    """Sentences the service will decode for these texts (its own segmenter)."""
    return sum(piece.translate for text in texts for piece in segment(text, language))


def make_request(kind: str, texts: list[str], card: ModelCard, beam: int | None,
                 timeout_s: float | None = None) -> Request:
    body: dict = {"texts": texts, "source": card.source_language, "target": card.target_language}
    if beam is not None:
        body["beam_size"] = beam
    if timeout_s is not None:
        body["timeout"] = timeout_s
    data = request_bytes(HOST, "/v1/translate", json.dumps(body).encode())
    return Request(kind, data, count_sentences(texts, card.source_language))


def as_sentence(text: str) -> str:
    """The text with a final period where it has no sentence-final punctuation, so joined texts split again."""
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def long_sentences(texts: list[str], tokenizer: spm.SentencePieceProcessor, min_tokens: int,
                   language: str) -> list[str]:
    """Sample sentences joined two or three at a time (", " then " und ", final periods dropped) into sentences of
    at least ``min_tokens`` tokens that the service's segmenter keeps whole (one sentence, <= 400 characters)."""
    stems = [text.rstrip(" .") for text in texts]
    found = []
    for start in range(0, len(stems) - 2, 3):
        first, second, third = stems[start : start + 3]
        for sentence in (f"{first}, {second}.", f"{first}, {second} und {third}."):
            if len(tokenizer.encode(sentence)) >= min_tokens and count_sentences([sentence], language) == 1:
                found.append(sentence)
                break
    if not found:
        raise ValueError(f"no joined sentence of >= {min_tokens} tokens: use more --sentences or lower --long-tokens")
    return found


def bulk_texts(sentences: list[str]) -> list[str]:
    """The sentences joined by spaces, BULK_SENTENCES_PER_TEXT per text."""
    chosen = [as_sentence(sentence) for sentence in sentences]
    return [" ".join(chosen[i : i + BULK_SENTENCES_PER_TEXT]) for i in range(0, len(chosen), BULK_SENTENCES_PER_TEXT)]


def list_requests(texts: list[str], card: ModelCard, size: int, beam: int) -> list[Request]:
    """The sample as requests of ``size`` texts of one sentence each (cycling when the sample is smaller)."""
    return [make_request("list", [texts[(start + i) % len(texts)] for i in range(size)], card, beam)
            for start in range(0, max(len(texts) - size + 1, 1), size)]


def mixed_requests(shorts: list[str], longs: list[str], card: ModelCard) -> list[Request]:
    """One-sentence requests at the default beam, every fourth one long."""
    requests = []
    for index, short in enumerate(shorts):
        if index % 3 == 0:
            requests.append(make_request("long", [longs[index // 3 % len(longs)]], card, None))
        requests.append(make_request("short", [short], card, None))
    return requests


def plan(args: argparse.Namespace, card: ModelCard, texts: list[str], tokenizer: spm.SentencePieceProcessor,
         beams: list[int]) -> tuple[list[Point], dict]:
    """The measurement points of the chosen scenarios, in order, and a description of the workload."""
    def singles(beam: int | None, timeout_s: float | None = None) -> list[Request]:
        return [make_request("single", [text], card, beam, timeout_s) for text in texts]

    points: list[Point] = []
    workload: dict = {}
    if "singles" in args.scenarios:
        for beam in beams:
            lists = list_requests(texts, card, args.list_size, beam)
            points += [Point("singles", "singles", beam, [Group(args.single_clients, singles(beam))]),
                       Point("singles", "lists", beam, [Group(args.list_clients, lists)])]
        workload["list_request_sentences"] = lists[0].sentences
    if "saturated" in args.scenarios:
        points += [Point("saturated", "saturated", beam, [Group(args.saturated_clients, singles(beam))])
                   for beam in beams]
    if "lone" in args.scenarios:
        points.append(Point("lone", "lone", 1, [Group(1, singles(1))]))
    if "fairness" in args.scenarios:
        pool = load_sentences(args.corpus, card.source_language, args.bulk_sentences)
        per_request = -(-len(pool) // args.bulk_connections)
        bodies = [bulk_texts(pool[start : start + per_request]) for start in range(0, len(pool), per_request)]
        bulk = [make_request("bulk", body, card, None, BULK_TIMEOUT_S) for body in bodies]
        lone = Group(1, singles(None, BULK_TIMEOUT_S))
        points += [Point("fairness", "idle", None, [lone]),
                   Point("fairness", "loaded", None, [lone, Group(args.bulk_connections, bulk, OTHER_HOST)])]
        workload["bulk_request"] = {"connections": args.bulk_connections, "sentences": bulk[0].sentences,
                                    "texts": len(bodies[0]), "characters": max(sum(map(len, b)) for b in bodies)}
    if "mixed" in args.scenarios:
        lengths = {text: len(tokenizer.encode(text)) for text in texts}
        shorts = [text for text in texts if lengths[text] < args.long_tokens]
        if not shorts:
            raise ValueError(f"no sample sentence is shorter than --long-tokens {args.long_tokens}")
        longs = long_sentences(texts, tokenizer, args.long_tokens, card.source_language)
        points.append(Point("mixed", "mixed", None, [Group(args.mixed_clients, mixed_requests(shorts, longs, card))]))
        workload["mixed"] = {"long_sentences": len(longs),
                             "long_tokens_mean": float(np.mean([len(tokenizer.encode(s)) for s in longs])),
                             "short_tokens_mean": float(np.mean([lengths[s] for s in shorts]))}
    return points, workload


# ---- measuring ---------------------------------------------------------------------------------------------------

def gauge(metrics: str, name: str) -> float:
    """A gauge's value in Prometheus text, summed over its labels."""
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", metrics, re.MULTILINE))


def settle(service: ServiceProcess, timeout_s: float = 60.0) -> None:
    """Wait until the service has dropped the requests abandoned at the end of a point (the metrics request
    itself is in flight), so that they do not weigh on the next one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = service.metrics()
        if gauge(metrics, "mt_http_requests_in_flight") <= 1 and gauge(metrics, "mt_queue_depth_sentences") == 0:
            return
        time.sleep(0.05)
    print(f"the service on {service.url} is still busy after {timeout_s:g} s; going on", flush=True)


def percentile_ms(seconds: list[float], q: float) -> float | None:
    return float(np.percentile(seconds, q)) * 1000 if seconds else None


def run_point(service: ServiceProcess, point: Point, warmup_s: float, duration_s: float) -> list[dict]:
    """All the point's clients together for warm-up + duration, then abandon what is in flight; one row per
    group and kind of request."""
    records = [([], [], []) for _ in point.groups]  # per group: latencies, their request positions, errors
    cpu_client, cpu_service = time.process_time(), service.cpu_seconds()
    started = time.perf_counter()
    measure_from, stop_at = started + warmup_s, started + warmup_s + duration_s

    decoded: list[float] = []  # the service's count of decoded sentences at the window's start and end

    async def count_decoded() -> None:
        for moment in (measure_from, stop_at):
            await asyncio.sleep(max(moment - time.perf_counter(), 0))
            decoded.append(gauge(await asyncio.to_thread(service.metrics), "mt_sentences_translated_total"))

    async def run() -> None:
        counting = asyncio.create_task(count_decoded())
        loops = []
        for group, (latencies, positions, errors) in zip(point.groups, records):
            data = [request.data for request in group.requests]
            loops += [(asyncio.create_task(client(service.port, data, i * len(data) // group.clients, measure_from,
                                                  stop_at, latencies, errors, positions, group.host)), errors)
                      for i in range(group.clients)]
        await asyncio.wait([task for task, _ in loops], timeout=max(stop_at - time.perf_counter(), 0))
        for task, errors in loops:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as error:  # a broken connection counts as an error, not a crash
                errors.append(repr(error))
        await counting

    asyncio.run(run())
    elapsed = time.perf_counter() - started
    cpu = {"service_cpu_pct": 100 * (service.cpu_seconds() - cpu_service) / elapsed,
           "client_cpu_pct": 100 * (time.process_time() - cpu_client) / elapsed}
    settle(service)
    rows = []
    for group, (latencies, positions, errors) in zip(point.groups, records):
        for kind in dict.fromkeys(request.kind for request in group.requests):
            chosen = [i for i, position in enumerate(positions) if group.requests[position].kind == kind]
            seconds = [latencies[i] for i in chosen]
            sentences = sum(group.requests[positions[i]].sentences for i in chosen)
            rows.append({"scenario": point.scenario, "point": point.name, "beam": point.beam,
                         "clients": group.clients, "kind": kind, "requests": len(seconds), "sentences": sentences,
                         "sentences_per_s": sentences / duration_s, "p50_ms": percentile_ms(seconds, 50),
                         "p95_ms": percentile_ms(seconds, 95), "p99_ms": percentile_ms(seconds, 99),
                         "mean_ms": 1000 * float(np.mean(seconds)) if seconds else None,
                         "service_sentences_per_s": (decoded[1] - decoded[0]) / duration_s, **cpu,
                         "errors": len(errors), "first_error": errors[0] if errors else ""})
    return rows


def describe(row: dict) -> str:
    beam = "default" if row["beam"] is None else row["beam"]
    p50, p95, p99 = ("      -" if row[key] is None else f"{row[key]:7.1f}" for key in ("p50_ms", "p95_ms", "p99_ms"))
    return (f"{row['scenario']:9} {row['point']:9} {row['config']:10} beam {beam!s:7} {row['clients']:3} clients "
            f"{row['kind']:6}: {row['sentences_per_s']:7.1f} sent/s  p50 {p50}  p95 {p95}  p99 {p99} ms  "
            f"({row['requests']} requests)  service decoded {row['service_sentences_per_s']:.1f} sent/s  "
            f"service CPU {row['service_cpu_pct']:3.0f}%  client CPU "
            f"{row['client_cpu_pct']:3.0f}%  errors {row['errors']}")


def measure(args: argparse.Namespace, points: list[Point], extra: dict[str, str]) -> list[dict]:
    """Start one service per configuration, then run every point on each, in alternating order."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        models = models_folder([args.model_dir], Path(tmp) / "models")
        services = {name: ServiceProcess(models, args.out / f"scheduling-{name}.log", {**extra, **CONFIGS[name]})
                    for name in args.configs}
        try:
            for name, service in services.items():
                service.start()
                print(f"service {name} ready on {service.url} ({CONFIGS[name]})", flush=True)
            for index, point in enumerate(points):
                for name in args.configs if index % 2 == 0 else args.configs[::-1]:
                    for row in run_point(services[name], point, args.warmup_s, args.duration_s):
                        rows.append({"config": name, **row})
                        print(describe(rows[-1]), flush=True)
        finally:
            for service in services.values():
                service.stop()
    return rows


def offline_engine(args: argparse.Namespace, beams: list[int]) -> dict:
    """bench.engine's onnx backend in its own process, before any service starts: the best throughput per beam
    over --offline-batch-sizes (for ``saturated``) and the batch-1 latency at beam 1 (for ``lone``)."""
    sizes = list(map(int, args.offline_batch_sizes.split(",")))
    wanted_sizes = (sizes if "saturated" in args.scenarios else []) + ([1] if "lone" in args.scenarios else [])
    wanted_beams = (set(beams) if "saturated" in args.scenarios else set()) | ({1} if "lone" in args.scenarios
                                                                                else set())
    if not wanted_sizes:
        return {}
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        subprocess.run([sys.executable, "-m", "bench.engine", "--model-dir", str(args.model_dir), "--corpus",
                        args.corpus, "--sentences", str(args.sentences), "--backends", "onnx", "--beams",
                        ",".join(map(str, sorted(wanted_beams))), "--batch-sizes",
                        ",".join(map(str, sorted(set(wanted_sizes)))), "--budget-s", str(args.offline_budget_s),
                        "--gemm-sizes", "64", "--out", tmp], check=True)
        rows = json.loads((Path(tmp) / "engine.json").read_text(encoding="utf-8"))["rows"]
    best = [max((r for r in rows if r["beam"] == beam and r["batch"] in sizes), key=lambda r: r["sentences_per_s"])
            for beam in beams if "saturated" in args.scenarios]
    single = next((r for r in rows if r["beam"] == 1 and r["batch"] == 1), None)
    return {"best": [{key: r[key] for key in ("beam", "batch", "sentences_per_s")} for r in best],
            "batch1_p50_ms": single["latency_p50_ms"] if single else None, "rows": rows}


# ---- targets and output ------------------------------------------------------------------------------------------

def find(rows: list[dict], config: str, point: str, kind: str, beam: int | None = None) -> dict | None:
    return next((r for r in rows if (r["config"], r["point"], r["kind"], r["beam"]) == (config, point, kind, beam)),
                None)


def singles_targets(rows: list[dict], config: str, beams: list[int]) -> list[dict]:
    results = []
    for beam in beams:
        singles, lists = find(rows, config, "singles", "single", beam), find(rows, config, "lists", "list", beam)
        if singles and lists:
            ratio = singles["sentences_per_s"] / max(lists["sentences_per_s"], 1e-9)
            results.append({"target": f"singles / lists throughput, beam {beam}", "config": config,
                            "wanted": f">= {TARGET_SINGLES}x", "met": ratio >= TARGET_SINGLES,
                            "measured": f"{ratio:.2f}x ({singles['sentences_per_s']:.0f} vs "
                                        f"{lists['sentences_per_s']:.0f} sentences/s)"})
    return results


def saturated_targets(rows: list[dict], config: str, offline: dict) -> list[dict]:
    results = []
    for best in offline.get("best", []):
        saturated = find(rows, config, "saturated", "single", best["beam"])
        if saturated:
            share = saturated["sentences_per_s"] / best["sentences_per_s"]
            results.append({"target": f"saturated / best offline throughput, beam {best['beam']}", "config": config,
                            "wanted": f">= {TARGET_SATURATION}x", "met": share >= TARGET_SATURATION,
                            "measured": f"{share:.2f}x ({saturated['sentences_per_s']:.0f} sentences/s at "
                                        f"{saturated['clients']} clients vs {best['sentences_per_s']:.0f} at batch "
                                        f"{best['batch']})"})
    return results


def lone_targets(rows: list[dict], config: str, offline: dict) -> list[dict]:
    lone, engine = find(rows, config, "lone", "single", 1), offline.get("batch1_p50_ms")
    if not lone or lone["p50_ms"] is None or engine is None:
        return []
    limit = engine + TARGET_LONE_SLACK_MS
    return [{"target": "lone client p50, beam 1 / engine batch-1 p50", "config": config,
             "wanted": f"<= {engine:.1f} + {TARGET_LONE_SLACK_MS} = {limit:.1f} ms", "met": lone["p50_ms"] <= limit,
             "measured": f"{lone['p50_ms']:.1f} ms ({lone['p50_ms'] - engine:+.1f} ms)"}]


def fairness_targets(rows: list[dict], config: str, duration_s: float, bulk: dict) -> list[dict]:
    idle, loaded = find(rows, config, "idle", "single"), find(rows, config, "loaded", "single")
    if not idle or not loaded or not idle["p95_ms"]:
        return []
    in_flight = bulk["sentences"] * bulk["connections"]
    target = {"target": f"single-sentence p95 beside {in_flight:,} sentences / idle", "config": config,
              "wanted": f"<= {TARGET_FAIRNESS}x"}
    if loaded["p95_ms"] is None:  # nothing finished in the window: the request in flight took longer than it
        return [{**target, "met": False,
                 "measured": f"> {1000 * duration_s / idle['p95_ms']:.1f}x (no request finished within the "
                             f"{duration_s:g} s window; idle p95 {idle['p95_ms']:.0f} ms)"}]
    ratio = loaded["p95_ms"] / idle["p95_ms"]
    bulk_rate = loaded["service_sentences_per_s"] - loaded["sentences_per_s"]  # what the service decoded for bulk
    return [{**target, "met": ratio <= TARGET_FAIRNESS,
             "measured": f"{ratio:.2f}x ({loaded['p95_ms']:.0f} vs {idle['p95_ms']:.0f} ms; the bulk client's "
                         f"sentences decoded meanwhile: {bulk_rate:.0f}/s)"}]


def mixed_targets(rows: list[dict]) -> list[dict]:
    continuous, batch = find(rows, "continuous", "mixed", "short"), find(rows, "batch", "mixed", "short")
    if not continuous or not batch or continuous["p99_ms"] is None or not batch["p99_ms"]:
        return []
    ratio = continuous["p99_ms"] / batch["p99_ms"]
    return [{"target": "short-request p99 among long ones, continuous / batch", "config": "continuous / batch",
             "wanted": f"<= {TARGET_MIXED}x", "met": ratio <= TARGET_MIXED,
             "measured": f"{ratio:.2f}x ({continuous['p99_ms']:.0f} vs {batch['p99_ms']:.0f} ms)"}]


def targets(summary: dict) -> list[dict]:
    """The issue's targets for every configuration measured; the comparison of the two schedulers when both were."""
    rows, offline = summary["rows"], summary["offline"]
    results = []
    for config in summary["configs"]:
        results += (singles_targets(rows, config, summary["beams"]) + saturated_targets(rows, config, offline)
                    + lone_targets(rows, config, offline)
                    + fairness_targets(rows, config, summary["duration_s"], summary["workload"].get("bulk_request")))
    return results + mixed_targets(rows)


def targets_table(checks: list[dict]) -> str:
    return markdown_table([{**c, "met": "yes" if c["met"] else "NO"} for c in checks],
                          [("target", "target"), ("config", "scheduler"), ("wanted", "wanted"),
                           ("measured", "measured"), ("met", "met")])


def scheduling_markdown(summary: dict) -> str:
    configs = ", ".join(f"{name} ({' '.join(f'{k}={v}' for k, v in env.items())})"
                        for name, env in summary["configs"].items())
    lines = [f"Model {summary['model']}; schedulers {configs}; {summary['sentences']} distinct sample sentences; "
             f"{summary['warmup_s']:g} s warm-up + {summary['duration_s']:g} s measured per point.", "",
             f"Reproduce: `{summary['command']}`", ""]
    offline = summary["offline"]
    if offline:
        best = ", ".join(f"beam {b['beam']}: {b['sentences_per_s']:.0f} sentences/s at batch {b['batch']}"
                         for b in offline["best"])
        single = offline["batch1_p50_ms"]
        lines += [f"Offline engine (onnx, its own process): {best or '-'}; batch-1 p50 at beam 1: "
                  f"{'-' if single is None else f'{single:.1f} ms'}.", ""]
    workload = summary["workload"]
    if "list_request_sentences" in workload:
        lines += [f"Lists: {workload['list_request_sentences']} sentences per request.", ""]
    if "bulk_request" in workload:
        bulk = workload["bulk_request"]
        lines += [f"Fairness load: {bulk['connections']} connection(s) from {OTHER_HOST}, each sending requests of "
                  f"{bulk['sentences']} sentences in {bulk['texts']} texts, up to {bulk['characters']:,} characters.",
                  ""]
    if "mixed" in workload:
        mixed = workload["mixed"]
        lines += [f"Mixed load: {mixed['long_sentences']} distinct long sentences of "
                  f"{mixed['long_tokens_mean']:.1f} tokens on average; short ones {mixed['short_tokens_mean']:.1f}.",
                  ""]
    lines += ["Targets (informational, not asserted):", "", targets_table(summary["targets"]), ""]
    columns = [("scenario", "scenario"), ("point", "point"), ("config", "scheduler"), ("beam", "beam"),
               ("clients", "clients"), ("kind", "requests of"), ("requests", "requests"),
               ("sentences_per_s", "sentences/s"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
               ("service_cpu_pct", "service CPU %"), ("client_cpu_pct", "client CPU %"), ("errors", "errors")]
    rows = [{**r, "beam": "default" if r["beam"] is None else r["beam"]} for r in summary["rows"]]
    return "\n".join(lines + [markdown_table(rows, columns), ""])


def print_targets(checks: list[dict]) -> None:
    for c in checks:
        print(f"  [{'met' if c['met'] else 'MISSED'}] {c['target']} ({c['config']}): {c['measured']} "
              f"(wanted {c['wanted']})", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/de-en"))
    parser.add_argument("--corpus", default=default_corpus(), help="sentence file with {lang} in its path")
    parser.add_argument("--sentences", type=int, default=256, help="sentences in the fixed sample")
    parser.add_argument("--configs", default="batch,continuous", help=f"from {', '.join(CONFIGS)}")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"from {', '.join(SCENARIOS)}")
    parser.add_argument("--beams", help="singles and saturated: beam sizes (default: 1 and the model's default)")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--single-clients", type=int, default=32, help="singles: clients sending one sentence")
    parser.add_argument("--list-clients", type=int, default=4, help="singles: clients sending lists")
    parser.add_argument("--list-size", type=int, default=64, help="singles: texts per list request")
    parser.add_argument("--saturated-clients", type=int, default=64)
    parser.add_argument("--mixed-clients", type=int, default=16)
    parser.add_argument("--bulk-sentences", type=int, default=1000, help="fairness: distinct sentences (from the "
                                                                         "corpus file) the bulk client keeps in flight")
    parser.add_argument("--bulk-connections", type=int, default=2, help="fairness: requests (one per connection) "
                                                                        "they are split into")
    parser.add_argument("--long-tokens", type=int, default=40, help="mixed: SentencePiece tokens of a long sentence")
    parser.add_argument("--offline-batch-sizes", default="32,64,128")
    parser.add_argument("--offline-budget-s", type=float, default=4.0, help="engine: seconds per configuration")
    parser.add_argument("--env", action="append", default=[], metavar="MT_NAME=VALUE",
                        help="extra service setting for every configuration (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    args.configs, args.scenarios = args.configs.split(","), args.scenarios.split(",")
    for name, known in (("configs", CONFIGS), ("scenarios", SCENARIOS)):
        if unknown := set(getattr(args, name)) - set(known):
            parser.error(f"unknown --{name} {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    card = read_card(args.model_dir)
    texts = load_sentences(args.corpus, card.source_language, args.sentences)
    tokenizer = spm.SentencePieceProcessor(model_file=str(args.model_dir / card.files.tokenizer))
    default_beam = card.decoding_defaults.beam_size
    beams = list(dict.fromkeys(map(int, args.beams.split(",")) if args.beams else (1, default_beam)))
    points, workload = plan(args, card, texts, tokenizer, beams)
    args.out.mkdir(parents=True, exist_ok=True)
    offline = offline_engine(args, beams)
    extra = dict(item.split("=", 1) for item in args.env)
    rows = measure(args, points, extra)

    summary = {"machine": machine(), "model": card.id, "command": shlex.join(["python", "-m", "bench.scheduling",
                                                                                 *argv]),
               "configs": {name: CONFIGS[name] for name in args.configs}, "env": extra, "scenarios": args.scenarios,
               "beams": beams, "sentences": len(texts), "warmup_s": args.warmup_s, "duration_s": args.duration_s,
               "workload": workload, "offline": offline, "rows": rows}
    summary["targets"] = targets(summary)
    write_csv(args.out / "scheduling.csv", rows)
    (args.out / "scheduling.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (args.out / "scheduling.md").write_text(scheduling_markdown(summary), encoding="utf-8")
    print("\nScheduling targets (informational, not asserted):")
    print_targets(summary["targets"])
    print(f"reproduce: {summary['command']}\nwrote {args.out}/scheduling.csv, scheduling.json, scheduling.md",
          flush=True)
    return summary


if __name__ == "__main__":
    main()
