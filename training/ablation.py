"""Ablation study: do gated cells and attention do what the design claims, on our data?

    python -m training.ablation --config training/configs/ablation.yaml --out runs/ablation [--parallel 2]

Every variant trains on the same data with the same vocabulary and the same budget (epochs), then is scored
on test2016 with the shared search code. The study writes ``results.json``, PNG plots and a markdown report
(``report.md``) into --out; ``--docs`` also copies report and plots to docs/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
import yaml

from service.decoding import SearchOptions
from service.pipeline import SentenceTranslator
from training.batching import collate
from training.config import load_config
from training.data import clean_pairs, fetch_multi30k, load_pairs, read_split
from training.evaluate import LENGTH_BUCKETS, bucket_name, score
from training.export import load_run
from training.model import Seq2Seq, count_parameters
from training.torch_step_model import TorchStepModel
from training.vocab import train_sentencepiece

log = logging.getLogger("training.ablation")
REPO = Path(__file__).resolve().parent.parent


def variant_overrides(variant: dict) -> list[str]:
    return [f"model.{key}={value}" for key, value in variant.items() if key != "name"]


def train_variants(config_path: Path, variants: list[dict], out: Path, data_dir: Path, parallel: int) -> None:
    """Train every variant in a subprocess (``parallel`` at a time, one thread each when parallel > 1)."""
    pending = list(variants)
    running: list[tuple[str, subprocess.Popen]] = []
    threads = max(1, (os.cpu_count() or 2) // parallel)
    while pending or running:
        while pending and len(running) < parallel:
            variant = pending.pop(0)
            run_dir = out / variant["name"]
            command = [sys.executable, "-m", "training.train", "--config", str(config_path), "--run-dir",
                       str(run_dir), "--data-dir", str(data_dir), "--set", f"train.threads={threads}",
                       *variant_overrides(variant)]
            log.info("training %s", variant["name"])
            with (out / f"{variant['name']}.out").open("w") as output:
                running.append((variant["name"], subprocess.Popen(command, cwd=REPO, stdout=output,
                                                                  stderr=subprocess.STDOUT)))
        name, process = running.pop(0)
        if process.wait() != 0:
            raise RuntimeError(f"training {name} failed: see {out / (name + '.out')}")


def source_position_gradients(model: Seq2Seq, examples: list[tuple[list[int], list[int]]], positions: int) -> np.ndarray:
    """Mean L2 norm of d(loss)/d(source embedding) at each of the first ``positions`` source positions.

    How much the translation loss still depends on early source words: vanishing gradients show up as a
    curve that decays towards the start of long sentences. -> [positions]
    """
    model.train(False)
    captured: list[torch.Tensor] = []

    def keep_encoder_embedding(_module, _inputs, output):
        if not captured:  # the first call is the encoder's; the decoder may share the module
            output.retain_grad()
            captured.append(output)

    handle = model.encoder.embedding.register_forward_hook(keep_encoder_embedding)
    try:
        c = model.config
        src, lengths, tgt_in, tgt_out = collate(examples, list(range(len(examples))), c.bos_id, c.eos_id, c.pad_id)
        logits = model(src, lengths, tgt_in)
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=c.pad_id,
                        reduction="sum").backward()
        norms = captured[0].grad.norm(dim=-1)[:, :positions]  # [B, positions]
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    return (norms.sum(0) / len(examples)).detach().numpy()


def evaluate_variant(run_dir: Path, tokenizer: spm.SentencePieceProcessor, test_pairs: list[tuple[str, str]],
                     long_examples: list[tuple[list[int], list[int]]], beam: int) -> dict:
    model, checkpoint = load_run(run_dir)
    translator = SentenceTranslator(TorchStepModel(model), tokenizer)
    sources, references = [s for s, _ in test_pairs], [t for _, t in test_pairs]
    hypotheses = [n[0].text for n in translator.translate(sources, SearchOptions(beam_size=beam))]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "parameters": count_parameters(model), "best_epoch": checkpoint["epoch"],
        "test2016": score(hypotheses, references, sources),
        "val_loss_curve": [m["val_loss"] for m in metrics], "train_loss_curve": [m["train_loss"] for m in metrics],
        "val_bleu_curve": [m["val_bleu"] for m in metrics],
        "grad_norm": {key: [m.get(key) for m in metrics] for key in
                      ("grad_norm_mean", "grad_norm_p50", "grad_norm_p99", "grad_norm_max", "clipped_fraction")},
        "source_position_gradient": source_position_gradients(model, long_examples, 20).tolist(),
        "tokens_per_s": float(np.mean([m["target_tokens_per_s"] for m in metrics])),
        "examples": hypotheses[:5],
    }


def attention_examples(run_dir: Path, tokenizer: spm.SentencePieceProcessor, sentences: list[str]):
    model, _ = load_run(run_dir)
    translator = SentenceTranslator(TorchStepModel(model), tokenizer)
    return [n[0] for n in translator.translate(sentences, SearchOptions(beam_size=1, return_attention=True))]


def plot(results: dict, attention: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    buckets = [bucket_name(lo, hi) for lo, hi in LENGTH_BUCKETS]
    files = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        by_length = results[name]["test2016"]["bleu_by_source_length"]
        ax.plot(buckets, [by_length.get(b, {}).get("bleu", np.nan) for b in buckets], marker="o", label=name)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("test2016 BLEU")
    ax.set_title("BLEU by source length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bleu_by_length.png", dpi=110)
    files.append("bleu_by_length.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        curve = results[name]["val_loss_curve"]
        axes[0].plot(range(1, len(curve) + 1), curve, marker=".", label=name)
        axes[1].plot(range(1, 21), results[name]["source_position_gradient"], marker=".", label=name)
    axes[0].set(xlabel="epoch", ylabel="validation loss (nats/token)", title="Validation loss")
    axes[1].set(xlabel="source position", ylabel="mean ||dL/d embedding||", yscale="log",
                title="Gradient reaching each source position\n(test2016 sentences of >= 20 tokens)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss_and_gradients.png", dpi=110)
    files.append("loss_and_gradients.png")

    for name, hypotheses in attention.items():
        fig, axes = plt.subplots(1, len(hypotheses), figsize=(6 * len(hypotheses), 5))
        for ax, hyp in zip(np.atleast_1d(axes), hypotheses):
            ax.imshow(hyp.attention, cmap="Greys", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(hyp.source_tokens)), hyp.source_tokens, rotation=70, fontsize=8)
            ax.set_yticks(range(len(hyp.target_tokens)), hyp.target_tokens, fontsize=8)
            ax.set_xlabel("source")
            ax.set_ylabel("target")
        fig.suptitle(f"Attention weights ({name}, greedy)")
        fig.tight_layout()
        filename = f"attention_{name.replace('+', '_')}.png"
        fig.savefig(out / filename, dpi=110)
        files.append(filename)
    plt.close("all")
    return files


def claims(results: dict) -> list[str]:
    """Plain statements of what the numbers say about the design's claims."""
    def bleu(name: str) -> float:
        return results[name]["test2016"]["bleu"]

    def bucket(name: str, key: str) -> float:
        return results[name]["test2016"]["bleu_by_source_length"].get(key, {}).get("bleu", float("nan"))

    lines = []
    if {"rnn+none", "lstm+none", "gru+none"} <= results.keys():
        gated = max(bleu("lstm+none"), bleu("gru+none"))
        held = gated > bleu("rnn+none")
        lines.append(f"Gated cells vs vanilla RNN (no attention): rnn {bleu('rnn+none'):.2f}, lstm {bleu('lstm+none'):.2f}, "
                     f"gru {bleu('gru+none'):.2f} BLEU. Claim {'held' if held else 'did not hold'}.")
    short, long = bucket_name(*LENGTH_BUCKETS[0]), bucket_name(*LENGTH_BUCKETS[-1])
    for attended, plain in (("lstm+bahdanau", "lstm+none"), ("gru+bahdanau", "gru+none"),
                            ("lstm+luong_general", "lstm+none")):
        if {attended, plain} <= results.keys():
            gain = bleu(attended) - bleu(plain)
            gain_short, gain_long = bucket(attended, short) - bucket(plain, short), bucket(attended, long) - bucket(plain, long)
            lines.append(
                f"{attended} vs {plain}: {gain:+.2f} BLEU overall; {gain_short:+.2f} on sources {short} words, "
                f"{gain_long:+.2f} on sources {long} words. Attention helps: {'yes' if gain > 0 else 'no'}; "
                f"helps most on long sentences: {'yes' if gain_long > gain_short else 'no'}.")
    return lines


def report(results: dict, files: list[str], command: str, budget: str, image_prefix: str = "") -> str:
    lines = ["# Ablation study: cells and attention on Multi30k de->en", "",
             f"Reproduce: `{command}`", "", budget, "",
             "| model | params | best epoch | test2016 BLEU | chrF | " +
             " | ".join(f"BLEU {bucket_name(lo, hi)}" for lo, hi in LENGTH_BUCKETS) +
             " | grad-norm mean (last epoch) | clipped steps (last epoch) | target tok/s |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(LENGTH_BUCKETS) + "---:|---:|---:|"]
    for name, r in results.items():
        by_length = r["test2016"]["bleu_by_source_length"]
        cells = " | ".join(f"{by_length.get(bucket_name(lo, hi), {}).get('bleu', float('nan')):.2f}"
                           for lo, hi in LENGTH_BUCKETS)
        lines.append(f"| {name} | {r['parameters']:,} | {r['best_epoch']} | {r['test2016']['bleu']:.2f} | "
                     f"{r['test2016']['chrf']:.2f} | {cells} | {r['grad_norm']['grad_norm_mean'][-1]:.3f} | "
                     f"{r['grad_norm']['clipped_fraction'][-1]:.2%} | {r['tokens_per_s']:.0f} |")
    counts = next(iter(results.values()))["test2016"]["bleu_by_source_length"]
    lines += ["", "Sentences per length bucket: " + ", ".join(f"{k}: {v['sentences']}" for k, v in counts.items()),
              "", "## What the numbers say", ""] + [f"- {line}" for line in claims(results)]
    lines += ["", "## Plots", ""] + [f"![{f}]({image_prefix}{f})" for f in files]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("training/configs/ablation.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"))
    parser.add_argument("--mirror", type=Path)
    parser.add_argument("--parallel", type=int, default=2, help="variants trained at once")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--test-limit", type=int, help="score only the first N test2016 pairs (smoke runs)")
    parser.add_argument("--docs", type=Path, help="also copy report.md (as ablation.md) and plots here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raw = yaml.safe_load(args.config.read_text())
    variants = raw["variants"]
    config = load_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    fetch_multi30k(args.data_dir, args.mirror)

    # One vocabulary for every variant, trained once and copied into each run.
    sp_path = args.out / "sentencepiece.model"
    if not sp_path.exists():
        pairs, _ = clean_pairs(read_split(args.data_dir, "train", config.source),
                               read_split(args.data_dir, "train", config.target))
        train_sentencepiece([s for s, _ in pairs] + [t for _, t in pairs], sp_path, config.data.vocab_size,
                            config.data.vocab_type)
    for variant in variants:
        (args.out / variant["name"]).mkdir(exist_ok=True)
        shutil.copy(sp_path, args.out / variant["name"] / "sentencepiece.model")
    train_variants(args.config, variants, args.out, args.data_dir, args.parallel)

    tokenizer = spm.SentencePieceProcessor(model_file=str(sp_path))
    test_pairs = load_pairs(args.data_dir, "test2016", config.source, config.target, clean=False)[: args.test_limit]
    eos = tokenizer.eos_id()
    long_examples = [(tokenizer.encode(s) + [eos], tokenizer.encode(t)) for s, t in test_pairs]
    long_examples = [e for e in long_examples if len(e[0]) >= 20]
    torch.set_num_threads(os.cpu_count() or 2)
    results = {v["name"]: evaluate_variant(args.out / v["name"], tokenizer, test_pairs, long_examples, args.beam)
               for v in variants}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    sample = [s for s, _ in test_pairs if 10 <= len(s.split()) <= 14][:2]
    attended = [v["name"] for v in variants if v.get("attention", "none") != "none"]
    attention = {name: attention_examples(args.out / name, tokenizer, sample) for name in attended[:2]}
    files = plot(results, attention, args.out)
    budget = (f"Budget: {config.train.epochs} epochs per model (early stopping patience {config.train.patience}), "
              f"same data (Multi30k {config.source}->{config.target} train, {config.data.vocab_size}-piece joint "
              f"SentencePiece vocabulary), same sizes; scored on test2016 with beam {args.beam}.")
    command = f"make ablation  # python -m training.ablation --config {args.config} --out {args.out}"
    text = report(results, files, command, budget)
    (args.out / "report.md").write_text(text)
    if args.docs:
        (args.docs / "ablation").mkdir(parents=True, exist_ok=True)
        (args.docs / "ablation.md").write_text(report(results, files, command, budget, "ablation/"))
        for name in files:
            shutil.copy(args.out / name, args.docs / "ablation" / name)
    print(text)


if __name__ == "__main__":
    main()
