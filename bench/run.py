"""`make bench`: the engine, service and scheduling benchmarks, then a summary with the targets and plots.

    python -m bench.run --model-dir models/de-en --out bench/results [--plots docs/performance]
        [--scheduling-args="--configs batch --scenarios lone,fairness"] [--skip-scheduling]

Each benchmark runs in its own process (bench.engine, bench.service, bench.scheduling) so that one's threads and
memory do not weigh on the other. The summary (summary.md) checks the issue's targets - printed, never asserted:

- at 32 concurrent clients, batching on gives >= 4x the throughput of batching off;
- saturated service throughput >= 75% of the engine's best offline throughput on the same sentences
  (same backend and beam as the service's requests);
- p50 latency of a lone client <= 1.3x the engine's single-sentence latency + 5 ms;
- and bench.scheduling's targets for the batch and continuous schedulers (issue 14; see that module).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from bench.common import markdown_table
from bench.scheduling import print_targets

TARGET_BATCHING_RATIO = 4.0
TARGET_SATURATION = 0.75
TARGET_LONE_FACTOR, TARGET_LONE_SLACK_MS = 1.3, 5.0


def targets(engine: dict, service: dict, backend: str = "onnx") -> list[dict]:
    beam = service["beam"]
    rows = engine["rows"]
    offline = [r for r in rows if r["backend"] == backend and r["beam"] == beam]
    results = []
    on = {r["clients"]: r for r in service["rows"] if r["config"] == "on"}
    off = {r["clients"]: r for r in service["rows"] if r["config"] == "off"}
    if 32 in on and 32 in off:
        ratio = on[32]["sentences_per_s"] / max(off[32]["sentences_per_s"], 1e-9)
        results.append({"target": "batching on / off throughput at 32 clients", "wanted": f">= {TARGET_BATCHING_RATIO}x",
                        "measured": f"{ratio:.2f}x ({on[32]['sentences_per_s']:.0f} vs "
                                    f"{off[32]['sentences_per_s']:.0f} sentences/s)",
                        "met": ratio >= TARGET_BATCHING_RATIO})
    if on and offline:
        best = max(offline, key=lambda r: r["sentences_per_s"])
        saturated = max(on.values(), key=lambda r: r["sentences_per_s"])
        share = saturated["sentences_per_s"] / best["sentences_per_s"]
        results.append({"target": "saturated service / best offline engine throughput",
                        "wanted": f">= {TARGET_SATURATION:.0%}",
                        "measured": f"{share:.0%} ({saturated['sentences_per_s']:.0f} sentences/s at "
                                    f"{saturated['clients']} clients vs {best['sentences_per_s']:.0f} at batch "
                                    f"{best['batch']})",
                        "met": share >= TARGET_SATURATION})
    single = next((r for r in offline if r["batch"] == 1 and "latency_p50_ms" in r), None)
    if 1 in on and single and on[1]["p50_ms"] is not None:
        limit = TARGET_LONE_FACTOR * single["latency_p50_ms"] + TARGET_LONE_SLACK_MS
        results.append({"target": "lone client p50 / engine single-sentence p50",
                        "wanted": f"<= {TARGET_LONE_FACTOR} x {single['latency_p50_ms']:.1f} + "
                                  f"{TARGET_LONE_SLACK_MS:.0f} = {limit:.1f} ms",
                        "measured": f"{on[1]['p50_ms']:.1f} ms", "met": on[1]["p50_ms"] <= limit})
    return results


def plot(engine: dict, service: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    beams = sorted({r["beam"] for r in engine["rows"]})
    fig, axes = plt.subplots(1, len(beams), figsize=(5 * len(beams), 3.6), squeeze=False)
    for ax, beam in zip(axes[0], beams):
        for backend in dict.fromkeys(r["backend"] for r in engine["rows"]):
            rows = [r for r in engine["rows"] if r["backend"] == backend and r["beam"] == beam]
            ax.plot([r["batch"] for r in rows], [r["sentences_per_s"] for r in rows], "o-", label=backend)
        ax.set_xscale("log", base=2)
        batches = sorted({r["batch"] for r in engine["rows"]})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size (sentences)")
        ax.set_ylabel("sentences/s")
        ax.set_title(f"Engine, offline: {'greedy' if beam == 1 else f'beam {beam}'}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    written.append(out / "engine_throughput.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    configs = list(service["configs"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for index, config in enumerate(configs):
        rows = sorted((r for r in service["rows"] if r["config"] == config), key=lambda r: r["clients"])
        clients, color = [r["clients"] for r in rows], f"C{index}"
        axes[0].plot(clients, [r["sentences_per_s"] for r in rows], "o-", color=color, label=f"batching {config}")
        for key, style in (("p50_ms", "o-"), ("p95_ms", "^:"), ("p99_ms", "s--")):
            axes[1].plot(clients, [r[key] for r in rows], style, color=color, label=f"{config} {key[:3]}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        clients = sorted({r["clients"] for r in service["rows"]})
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("sentences/s")
    axes[0].set_title("Service: throughput")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("latency (ms)")
    axes[1].set_title("Service: latency percentiles")
    fig.tight_layout()
    written.append(out / "service.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/de-en"))
    parser.add_argument("--run-dir", type=Path, help="run with best.pt for the torch backend (default runs/<id>)")
    parser.add_argument("--corpus", help="sentence file with {lang} (default: $MT_MULTI30K_MIRROR/val.{lang}.gz)")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch-sizes", default="1,8,32,64,128")
    parser.add_argument("--beams", default="1,4")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--budget-s", type=float, default=4.0, help="engine: seconds per configuration")
    parser.add_argument("--gemm-sizes", default="256,512,1024,2048")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--configs", default="on,off", help="service configurations (on, off, nowait)")
    parser.add_argument("--beam", type=int, default=1, help="service: beam size of every request")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--plots", type=Path, help="also write the plots here (e.g. docs/performance)")
    parser.add_argument("--skip-engine", action="store_true", help="reuse OUT/engine.json")
    parser.add_argument("--skip-service", action="store_true", help="reuse OUT/service.json")
    parser.add_argument("--skip-scheduling", action="store_true", help="reuse OUT/scheduling.json where there")
    parser.add_argument("--scheduling-args", default="", help='more arguments for bench.scheduling, as one string '
                                                               '(--scheduling-args="--configs batch"); --warmup-s '
                                                               'and --duration-s are passed on')
    args = parser.parse_args(argv)

    common = ["--model-dir", str(args.model_dir), "--sentences", str(args.sentences), "--out", str(args.out)]
    if args.corpus:
        common += ["--corpus", args.corpus]
    if not args.skip_engine:
        engine_args = ["--batch-sizes", args.batch_sizes, "--beams", args.beams, "--backends", args.backends,
                       "--budget-s", str(args.budget_s), "--gemm-sizes", args.gemm_sizes]
        if args.run_dir:
            engine_args += ["--run-dir", str(args.run_dir)]
        subprocess.run([sys.executable, "-m", "bench.engine", *common, *engine_args], check=True)
    if not args.skip_service:
        subprocess.run([sys.executable, "-m", "bench.service", *common, "--clients", args.clients, "--configs",
                        args.configs, "--beam", str(args.beam), "--warmup-s", str(args.warmup_s),
                        "--duration-s", str(args.duration_s)], check=True)
    if not args.skip_scheduling:
        subprocess.run([sys.executable, "-m", "bench.scheduling", *common, "--warmup-s", str(args.warmup_s),
                        "--duration-s", str(args.duration_s), *shlex.split(args.scheduling_args)], check=True)

    engine = json.loads((args.out / "engine.json").read_text(encoding="utf-8"))
    service = json.loads((args.out / "service.json").read_text(encoding="utf-8"))
    checks = targets(engine, service)
    plots = plot(engine, service, args.out)
    if args.plots:
        plot(engine, service, args.plots)
    m = engine["machine"]
    lines = ["# Benchmark summary", "",
             f"Machine: {m['nproc']} CPUs, {m['cpu']} ({m.get('simd', '')}); onnxruntime {m.get('onnxruntime')}, "
             f"torch {m.get('torch', '-')}, numpy {m.get('numpy')}.", "", "## Targets", "",
             markdown_table([{**c, "met": "yes" if c["met"] else "NO"} for c in checks],
                            [("target", "target"), ("wanted", "wanted"), ("measured", "measured"), ("met", "met")]),
             "", "## Engine (offline)", "", (args.out / "engine.md").read_text(encoding="utf-8"),
             "## Service (end to end)", "", (args.out / "service.md").read_text(encoding="utf-8"),
             " ".join(f"![{p.stem}]({p.name})" for p in plots), ""]
    scheduling_checks = []
    if (args.out / "scheduling.json").exists():
        scheduling_checks = json.loads((args.out / "scheduling.json").read_text(encoding="utf-8"))["targets"]
        lines += ["## Scheduling: batch vs continuous (issue 14)", "",
                  (args.out / "scheduling.md").read_text(encoding="utf-8")]
    (args.out / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    print("\nTargets (informational, not asserted):")
    for c in checks:
        print(f"  [{'met' if c['met'] else 'MISSED'}] {c['target']}: {c['measured']} (wanted {c['wanted']})")
    if scheduling_checks:
        print("Scheduling targets:")
        print_targets(scheduling_checks)
    print(f"summary: {args.out}/summary.md", flush=True)
    return checks + scheduling_checks


if __name__ == "__main__":
    main()
