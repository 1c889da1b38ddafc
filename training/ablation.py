"""Ablation study: do gated cells and attention do what the design claims, on our data?

    python -m training.ablation --config training/configs/ablation.yaml --out runs/ablation [--parallel 2]

Every variant trains on the same data with the same vocabulary and the same budget (epochs), then is scored
on test2016 (and on a synthetic long-sentence set of joined test pairs) with the shared search code, and every
claim is a paired-bootstrap BLEU difference with a 95% interval. The study writes ``results.json``, PNG plots
and a markdown report (``report.md``) into --out; ``--docs`` also writes docs/ablation.md (keeping its
hand-written "## Discussion" section) and copies the plots to docs/ablation/.
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

from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from training.batching import collate
from training.config import load_config
from training.data import clean_pairs, fetch_multi30k, load_pairs, read_split
from training.evaluate import LENGTH_BUCKETS, bucket_name, score
from training.export import load_run
from training.model import Seq2Seq, count_parameters
from training.significance import Difference, gain_difference, paired_gain, sentence_statistics
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


def joined_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive test pairs joined into one (2i with 2i+1): a synthetic long-sentence set (~2x the words),
    since Multi30k itself has almost no sentences over 25 words."""
    return [(f"{s1} {s2}", f"{t1} {t2}") for (s1, t1), (s2, t2) in zip(pairs[0::2], pairs[1::2])]


def evaluate_variant(run_dir: Path, tokenizer: spm.SentencePieceProcessor, test_pairs: list[tuple[str, str]],
                     probe_examples: list[tuple[list[int], list[int]]], beam: int) -> tuple[dict, dict]:
    """Scores, curves and gradient probes of one trained variant, and its hypotheses per test set."""
    model, checkpoint = load_run(run_dir)
    translator = SentenceTranslator(TorchStepModel(model), tokenizer)
    hypotheses, scores = {}, {}
    for name, pairs in (("test2016", test_pairs), ("joined", joined_pairs(test_pairs))):
        sources, references = [s for s, _ in pairs], [t for _, t in pairs]
        hypotheses[name] = [n[0].text for n in translator.translate(sources, SearchOptions(beam_size=beam))]
        scores[name] = score(hypotheses[name], references, sources)
        (run_dir / f"{name}.beam{beam}.hyp").write_text("\n".join(hypotheses[name]) + "\n")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "parameters": count_parameters(model), "best_epoch": checkpoint["epoch"], **scores,
        "val_loss_curve": [m["val_loss"] for m in metrics], "train_loss_curve": [m["train_loss"] for m in metrics],
        "val_bleu_curve": [m["val_bleu"] for m in metrics],
        "grad_norm": {key: [m.get(key) for m in metrics] for key in
                      ("grad_norm_mean", "grad_norm_p50", "grad_norm_p99", "grad_norm_max", "clipped_fraction")},
        "source_position_gradient": source_position_gradients(model, probe_examples, 20).tolist(),
        "tokens_per_s": float(np.mean([m["target_tokens_per_s"] for m in metrics])),
        "joined_sentences": len(hypotheses["joined"]), "examples": hypotheses["test2016"][:5],
    }, hypotheses


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

    counts = results[names[0]]["test2016"]["bleu_by_source_length"]
    labels = [f"{b}\n({counts.get(b, {}).get('sentences', 0)})" for b in buckets]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in names:
        by_length = results[name]["test2016"]["bleu_by_source_length"]
        (line,) = ax.plot(labels, [by_length.get(b, {}).get("bleu", np.nan) for b in buckets], marker="o", label=name)
        ax.plot([len(labels)], [results[name]["joined"]["bleu"]], marker="s", color=line.get_color())
    ax.set_xticks(range(len(labels) + 1), labels + [f"joined pairs\n({results[names[0]]['joined_sentences']})"])
    ax.set_xlabel("source length in words (sentences)")
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


SHORT_MAX_WORDS, LONG_MIN_WORDS = 10, 16
DISCUSSION = "## Discussion"
GATED_PAIRS = (("lstm+none", "rnn+none"), ("gru+none", "rnn+none"))
ATTENTION_PAIRS = (("lstm+bahdanau", "lstm+none"), ("gru+bahdanau", "gru+none"), ("lstm+luong_general", "lstm+none"))


def compare(hypotheses: dict[str, dict[str, list[str]]], test_pairs: list[tuple[str, str]], samples: int = 1000) -> dict:
    """Paired-bootstrap BLEU differences for every claim's pair of variants.

    For each pair (a, b): a - b overall, on short (<= 10 words) and long (>= 16 words) test2016 sources, the
    long-minus-short difference of those gains, and a - b on the joined-pairs set.
    """
    references = {"test2016": [t for _, t in test_pairs], "joined": [t for _, t in joined_pairs(test_pairs)]}
    stats = {name: {split: sentence_statistics(hyps[split], references[split]) for split in references}
             for name, hyps in hypotheses.items()}
    lengths = np.array([len(s.split()) for s, _ in test_pairs])
    short, long = np.flatnonzero(lengths <= SHORT_MAX_WORDS), np.flatnonzero(lengths >= LONG_MIN_WORDS)
    result = {}
    for a, b in GATED_PAIRS + ATTENTION_PAIRS + (("lstm+luong_general", "lstm+bahdanau"),):
        if a in stats and b in stats:
            test_a, test_b = stats[a]["test2016"], stats[b]["test2016"]
            result[f"{a} vs {b}"] = {
                "overall": paired_gain(test_a, test_b, samples=samples).to_dict(),
                "short": paired_gain(test_a, test_b, short, samples=samples).to_dict(),
                "long": paired_gain(test_a, test_b, long, samples=samples).to_dict(),
                "long_minus_short": gain_difference(test_a, test_b, long, short, samples=samples).to_dict(),
                "joined": paired_gain(stats[a]["joined"], stats[b]["joined"], samples=samples).to_dict(),
                "sentences": {"short": len(short), "long": len(long), "joined": len(references["joined"])}}
    return result


def verdict(difference: dict) -> str:
    if difference["low"] > 0:
        return "held"
    return "did not hold (significantly the other way)" if difference["high"] < 0 else "not shown (95% CI includes 0)"


def claims(results: dict, comparisons: dict) -> list[str]:
    """Plain statements of what the numbers say about the design's claims, with bootstrap 95% intervals."""
    def gain(key: str, part: str) -> str:
        return str(Difference(**comparisons[key][part]))

    lines = []
    for a, b in GATED_PAIRS:
        key = f"{a} vs {b}"
        if key in comparisons:
            lines.append(f"Gated cell beats the vanilla RNN ({key}, no attention): {gain(key, 'overall')} BLEU "
                         f"on test2016. Claim {verdict(comparisons[key]['overall'])}.")
    for a, b in ATTENTION_PAIRS:
        key = f"{a} vs {b}"
        if key in comparisons:
            c = comparisons[key]
            lines.append(
                f"Attention helps ({key}): {gain(key, 'overall')} BLEU on test2016. Claim {verdict(c['overall'])}. "
                f"Gain on sources <= {SHORT_MAX_WORDS} words {gain(key, 'short')}, on sources >= {LONG_MIN_WORDS} "
                f"words {gain(key, 'long')}: more on long sentences {verdict(c['long_minus_short'])} "
                f"(long - short {gain(key, 'long_minus_short')}). On joined test pairs (~2x longer): "
                f"{gain(key, 'joined')}.")
    key = "lstm+luong_general vs lstm+bahdanau"
    if key in comparisons:
        lines.append(f"Luong general vs Bahdanau attention (LSTM): {gain(key, 'overall')} BLEU on test2016, "
                     f"{gain(key, 'joined')} on joined pairs.")
    for name, r in results.items():
        g, curve = r["grad_norm"], np.asarray(r["source_position_gradient"])
        lines.append(f"Gradients, {name}: last-epoch norm p50 {g['grad_norm_p50'][-1]:.2f}, p99 "
                     f"{g['grad_norm_p99'][-1]:.2f}, max {g['grad_norm_max'][-1]:.2f}, {g['clipped_fraction'][-1]:.0%} "
                     f"of steps clipped; gradient reaching source positions 1-20 spans "
                     f"{curve.min():.2g}-{curve.max():.2g} (max/min {curve.max() / curve.min():.1f}x).")
    return lines


def report(results: dict, comparisons: dict, files: list[str], command: str, budget: str,
           image_prefix: str = "", discussion: str = "") -> str:
    lines = ["# Ablation study: cells and attention on Multi30k de->en", "",
             f"Reproduce: `{command}`", "", budget, "",
             "| model | params | best epoch | test2016 BLEU | chrF | " +
             " | ".join(f"BLEU {bucket_name(lo, hi)}" for lo, hi in LENGTH_BUCKETS) +
             " | joined pairs BLEU | grad-norm mean (last epoch) | clipped steps (last epoch) | target tok/s |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(LENGTH_BUCKETS) + "---:|---:|---:|---:|"]
    for name, r in results.items():
        by_length = r["test2016"]["bleu_by_source_length"]
        cells = " | ".join(f"{by_length.get(bucket_name(lo, hi), {}).get('bleu', float('nan')):.2f}"
                           for lo, hi in LENGTH_BUCKETS)
        lines.append(f"| {name} | {r['parameters']:,} | {r['best_epoch']} | {r['test2016']['bleu']:.2f} | "
                     f"{r['test2016']['chrf']:.2f} | {cells} | {r['joined']['bleu']:.2f} | "
                     f"{r['grad_norm']['grad_norm_mean'][-1]:.3f} | {r['grad_norm']['clipped_fraction'][-1]:.2%} | "
                     f"{r['tokens_per_s']:.0f} |")
    counts = next(iter(results.values()))["test2016"]["bleu_by_source_length"]
    lines += ["", "Sentences per length bucket: " + ", ".join(f"{k}: {v['sentences']}" for k, v in counts.items()) +
              ". Joined pairs: test2016 sentences 2i and 2i+1 joined into one source and one reference "
              "(a synthetic long-sentence set). Intervals are paired bootstrap 95% intervals (1,000 resamples).",
              "", "## What the numbers say", ""] + [f"- {line}" for line in claims(results, comparisons)]
    if discussion:
        lines += ["", discussion.strip()]
    lines += ["", "## Plots", ""] + [f"![{f}]({image_prefix}{f})" for f in files]
    return "\n".join(lines) + "\n"


def kept_discussion(path: Path) -> str:
    """The hand-written '## Discussion' section of an earlier report, kept when the report is regenerated."""
    text = path.read_text() if path.exists() else ""
    start = text.find(DISCUSSION)
    if start < 0:
        return ""
    end = text.find("\n## ", start + len(DISCUSSION))
    return text[start:end if end >= 0 else len(text)]


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
    probe_examples = [(tokenizer.encode(s) + [eos], tokenizer.encode(t)) for s, t in test_pairs]
    probe_examples = [e for e in probe_examples if len(e[0]) >= 20]
    torch.set_num_threads(os.cpu_count() or 2)
    results, hypotheses = {}, {}
    for v in variants:
        results[v["name"]], hypotheses[v["name"]] = evaluate_variant(args.out / v["name"], tokenizer, test_pairs,
                                                                     probe_examples, args.beam)
    comparisons = compare(hypotheses, test_pairs)
    (args.out / "results.json").write_text(json.dumps({"variants": results, "comparisons": comparisons}, indent=2))
    sample = [s for s, _ in test_pairs if 10 <= len(s.split()) <= 14][:2]
    # One heatmap per attention mechanism, from the first variant that uses it.
    first_with = {}
    for v in variants:
        first_with.setdefault(v.get("attention", "none"), v["name"])
    first_with.pop("none", None)
    attention = {name: attention_examples(args.out / name, tokenizer, sample) for name in first_with.values()}
    files = plot(results, attention, args.out)
    budget = (f"Budget: {config.train.epochs} epochs per model (early stopping patience {config.train.patience}), "
              f"same data (Multi30k {config.source}->{config.target} train, {config.data.vocab_size}-piece joint "
              f"SentencePiece vocabulary), same sizes, gradients clipped at norm {config.train.clip_norm:g}; scored on "
              f"test2016 with beam {args.beam}.")
    command = f"make ablation  # python -m training.ablation --config {args.config} --out {args.out}"
    text = report(results, comparisons, files, command, budget)
    (args.out / "report.md").write_text(text)
    if args.docs:
        (args.docs / "ablation").mkdir(parents=True, exist_ok=True)
        doc = args.docs / "ablation.md"
        doc.write_text(report(results, comparisons, files, command, budget, "ablation/", kept_discussion(doc)))
        for name in files:
            shutil.copy(args.out / name, args.docs / "ablation" / name)
    print(text)


if __name__ == "__main__":
    main()
