"""Offline engine benchmark: sentences/s and tokens/s by batch size, backend and search, against the FLOP ceiling.

    python -m bench.engine --model-dir models/de-en [--run-dir runs/de-en] --out bench/results

Every configuration decodes the same sentences (a fixed sample of the corpus, tokenized once): they are
sorted by length, cut into batches of B (as an offline translator does, to cut padding), and the batches are
decoded in a fixed shuffled order until all are done or the time budget is spent (at least one batch).
The timed call is ``SentenceTranslator.translate_ids`` - the shared search plus detokenization - which is
exactly what the service's batcher runs per decoder batch.

Backends: ``torch`` (PyTorch eager through training/torch_step_model.py; needs the run directory with
best.pt), ``onnx`` (onnxruntime fp32), ``onnx-int8`` (the int8 decoder, where the model ships one) and
``onnx-reranked`` (fp32, the beam reranked by the reverse model beside it, where the card asks for reranking).
FLOPs are counted from model.json (bench.common) on the padded batches the search really runs (the forward
model's only: a reranked backend's FLOP/s leave out the reverse model's pass).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from bench.common import (
    bridge_flops,
    decoder_step_flops,
    default_corpus,
    encoder_flops_per_token,
    gemm_gflops,
    load_sentences,
    machine,
    markdown_table,
    write_csv,
)
from inference.card import read_card
from inference.onnx_model import OnnxSeq2Seq
from inference.rerank import reranker_for
from inference.search import SearchOptions
from inference.translator import SentenceTranslator

BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-reranked")


class CountingModel:
    """Wraps a StepModel and counts the work the search asks of it (rows, steps, padded source tokens, FLOPs)."""

    def __init__(self, inner, arch: dict) -> None:
        self.inner, self.arch = inner, arch
        self.bos_id, self.eos_id = inner.bos_id, inner.eos_id
        self._encoder_per_token, self._bridge = encoder_flops_per_token(arch), bridge_flops(arch)
        self._step_cache: dict[int, float] = {}
        self.reset()

    def reset(self) -> None:
        self.flops = 0.0
        self.row_steps = 0
        self.steps = 0

    def encode(self, src, lengths):
        self.flops += src.size * self._encoder_per_token + len(src) * self._bridge
        return self.inner.encode(src, lengths)

    def step(self, prev_tokens, state, encoded):
        source = encoded.mask.shape[1]
        if source not in self._step_cache:
            self._step_cache[source] = decoder_step_flops(self.arch, source)
        self.flops += len(prev_tokens) * self._step_cache[source]
        self.row_steps += len(prev_tokens)
        self.steps += 1
        return self.inner.step(prev_tokens, state, encoded)


@dataclass
class Backend:
    name: str
    translator: SentenceTranslator
    counter: CountingModel


def load_backends(model_dir: Path, run_dir: Path | None, wanted: list[str], threads: int) -> tuple[list[Backend], dict]:
    card = read_card(model_dir)
    arch = card.architecture
    backends, skipped = [], {}
    for name in wanted:
        if name == "torch":
            if run_dir is None or not (run_dir / "best.pt").exists():
                skipped[name] = f"no checkpoint ({run_dir}/best.pt)"
                continue
            import torch

            from training.export import load_run
            from training.torch_step_model import TorchStepModel

            if threads:
                torch.set_num_threads(threads)
            model, _ = load_run(run_dir)
            inner = TorchStepModel(model)
            tokenizer = spm.SentencePieceProcessor(model_file=str(model_dir / card.files.tokenizer))
        elif name in ("onnx", "onnx-int8", "onnx-reranked"):
            quantized = name == "onnx-int8"
            if quantized and card.files.decoder_int8 is None:
                skipped[name] = "the model ships no int8 decoder"
                continue
            if name == "onnx-reranked" and card.decoding_defaults.rerank is None:
                skipped[name] = "the model card asks for no reranking"
                continue
            inner = OnnxSeq2Seq(model_dir, quantized=quantized, threads=threads)
            tokenizer = inner.tokenizer
        else:
            raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
        counter = CountingModel(inner, arch)
        reranker = reranker_for(card, model_dir, threads) if name == "onnx-reranked" else None
        backends.append(Backend(name, SentenceTranslator(counter, tokenizer, reranker=reranker), counter))
    return backends, skipped


def batches_for(sources: list[list[int]], batch_size: int, seed: int = 0) -> list[list[list[int]]]:
    """Length-sorted batches of ``batch_size``, in a fixed shuffled order (so a time-limited run sees all lengths)."""
    ordered = sorted(sources, key=len)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def run_config(backend: Backend, sources: list[list[int]], batch_size: int, beam: int, budget_s: float) -> dict:
    options = SearchOptions(beam_size=beam)
    batches = batches_for(sources, batch_size)
    backend.translator.translate_ids(batches[-1][:batch_size], options)  # warm-up (shapes, allocator)
    counter = backend.counter
    counter.reset()
    sentences = tokens = source_tokens = 0
    per_batch_s: list[float] = []
    started = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        results = backend.translator.translate_ids(batch, options)
        per_batch_s.append(time.perf_counter() - t0)
        sentences += len(batch)
        source_tokens += sum(map(len, batch))
        tokens += sum(len(n[0].target_tokens) for n in results)  # target pieces, </s> included when complete
        if time.perf_counter() - started >= budget_s:
            break
    elapsed = time.perf_counter() - started
    row = {"backend": backend.name, "beam": beam, "batch": batch_size, "sentences": sentences,
           "seconds": round(elapsed, 3), "sentences_per_s": sentences / elapsed, "tokens_per_s": tokens / elapsed,
           "source_tokens": source_tokens, "generated_tokens": tokens, "decoder_row_steps": counter.row_steps,
           "decoder_calls": counter.steps, "gflops_executed": counter.flops / 1e9,
           "gflop_per_s": counter.flops / elapsed / 1e9}
    if batch_size == 1:
        row["latency_p50_ms"] = statistics.median(per_batch_s) * 1000
        row["latency_mean_ms"] = statistics.fmean(per_batch_s) * 1000
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/de-en"))
    parser.add_argument("--run-dir", type=Path, help="training run with best.pt for the torch backend "
                                                     "(default: runs/<model id> when it exists)")
    parser.add_argument("--corpus", default=default_corpus(), help="sentence file with {lang} in its path "
                                                                   "(default: $MT_MULTI30K_MIRROR/val.{lang}.gz)")
    parser.add_argument("--sentences", type=int, default=256, help="sentences in the fixed sample")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128")
    parser.add_argument("--beams", default="1,4")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--budget-s", type=float, default=4.0, help="seconds per configuration (>= one batch)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's and torch's "
                                                               "default, one per core)")
    parser.add_argument("--gemm-sizes", default="256,512,1024,2048", help="square matmul sizes for the GEMM peak")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)

    card = read_card(args.model_dir)
    run_dir = args.run_dir or (Path("runs") / card.id)
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']} ({info.get('simd', '')})", flush=True)
    gemm = gemm_gflops(tuple(map(int, args.gemm_sizes.split(","))))
    print(f"numpy float32 GEMM GFLOP/s: {gemm['by_size']} -> peak {gemm['peak']}", flush=True)

    backends, skipped = load_backends(args.model_dir, run_dir, args.backends.split(","), args.threads)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    texts = load_sentences(args.corpus, card.source_language, args.sentences)
    sources = [backends[0].translator.encode(t) for t in texts]
    mean_source = float(np.mean([len(s) for s in sources]))
    arch = card.architecture
    step = decoder_step_flops(arch, mean_source)
    encoder = encoder_flops_per_token(arch)

    rows = []
    for beam in map(int, args.beams.split(",")):
        for backend in backends:
            for batch_size in map(int, args.batch_sizes.split(",")):
                row = run_config(backend, sources, batch_size, beam, args.budget_s)
                row["pct_of_gemm_peak"] = 100 * row["gflop_per_s"] / gemm["peak"]
                rows.append(row)
                print(f"{backend.name:9} beam {beam} batch {batch_size:3}: {row['sentences_per_s']:7.1f} sent/s "
                      f"{row['tokens_per_s']:8.0f} tok/s  {row['gflop_per_s']:5.1f} GFLOP/s "
                      f"({row['pct_of_gemm_peak']:.0f}% of GEMM peak)  [{row['sentences']} sentences]", flush=True)

    generated = sum(r["generated_tokens"] for r in rows if r["beam"] == 1)
    source_total = sum(r["source_tokens"] for r in rows if r["beam"] == 1)
    per_token = step + encoder * source_total / max(generated, 1) + bridge_flops(arch) * sum(
        r["sentences"] for r in rows if r["beam"] == 1) / max(generated, 1)
    summary = {
        "machine": info, "gemm_gflops": gemm, "model": {"id": card.id, "parameters": arch.get("parameters"),
                                                        "cell": arch["cell"], "attention": arch["attention"]},
        "sentences": len(sources), "mean_source_tokens": mean_source,
        "flops": {"decoder_step_mflop": step / 1e6, "encoder_mflop_per_source_token": encoder / 1e6,
                  "greedy_mflop_per_generated_token": per_token / 1e6,
                  "ceiling_tokens_per_s_greedy": gemm["peak"] * 1e9 / per_token},
        "skipped": skipped, "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "engine.csv", rows)
    (args.out / "engine.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (args.out / "engine.md").write_text(engine_markdown(summary), encoding="utf-8")
    print(f"FLOPs: decoder step {step / 1e6:.2f} MFLOP (mean source {mean_source:.1f} tokens), encoder "
          f"{encoder / 1e6:.2f} MFLOP/source token -> {per_token / 1e6:.2f} MFLOP per generated token (greedy); "
          f"ceiling {summary['flops']['ceiling_tokens_per_s_greedy']:,.0f} tokens/s", flush=True)
    print(f"wrote {args.out}/engine.csv, engine.json, engine.md", flush=True)
    return summary


def engine_markdown(summary: dict) -> str:
    flops, gemm = summary["flops"], summary["gemm_gflops"]
    lines = [f"Model {summary['model']['id']} ({summary['model']['parameters']:,} parameters, "
             f"{summary['model']['cell']} + {summary['model']['attention']}); {summary['sentences']} sentences, "
             f"mean source length {summary['mean_source_tokens']:.1f} tokens (with </s>).", "",
             f"numpy float32 GEMM: {', '.join(f'{n}: {g}' for n, g in gemm['by_size'].items())} GFLOP/s "
             f"-> peak {gemm['peak']} GFLOP/s.",
             f"FLOPs: decoder step {flops['decoder_step_mflop']:.2f} MFLOP per row, encoder "
             f"{flops['encoder_mflop_per_source_token']:.2f} MFLOP per source token -> "
             f"{flops['greedy_mflop_per_generated_token']:.2f} MFLOP per generated token (greedy, encoder included); "
             f"compute ceiling {flops['ceiling_tokens_per_s_greedy']:,.0f} tokens/s.", ""]
    for name, why in summary["skipped"].items():
        lines.append(f"Not measured: {name} ({why}).")
    columns = [("backend", "backend"), ("beam", "beam"), ("batch", "batch"), ("sentences_per_s", "sentences/s"),
               ("tokens_per_s", "tokens/s"), ("gflop_per_s", "GFLOP/s"), ("pct_of_gemm_peak", "% of GEMM peak"),
               ("sentences", "sentences timed")]
    lines += ["", markdown_table(summary["rows"], columns), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
