"""Train an attention Seq2Seq on Multi30k.

    python -m training.train --config training/configs/de-en.yaml [--run-dir runs/de-en] [--mirror DIR]

The run directory holds the SentencePiece model, ``last.pt`` (resumable), ``best.pt`` (best validation
BLEU), ``metrics.jsonl`` (one line per epoch) and ``train.log``. Re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import sacrebleu
import sentencepiece as spm
import torch
import torch.nn.functional as F
from tqdm import tqdm

from service.decoding import SearchOptions
from service.pipeline import SentenceTranslator
from training.batching import collate, token_batches
from training.config import RunConfig, load_config
from training.data import CleaningRules, clean_pairs, fetch_multi30k, load_pairs, read_split
from training.model import Seq2Seq, count_parameters
from training.torch_step_model import TorchStepModel
from training.vocab import train_sentencepiece

log = logging.getLogger("training")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Corpus:
    """Cleaned train pairs and normalized val pairs, tokenized with the run's SentencePiece model."""

    def __init__(self, config: RunConfig, data_dir: Path, run_dir: Path) -> None:
        src, tgt = config.source, config.target
        rules = CleaningRules(config.data.max_words, config.data.max_length_ratio)
        self.train_pairs, dropped = clean_pairs(read_split(data_dir, "train", src), read_split(data_dir, "train", tgt),
                                                rules)
        log.info("train %s-%s: kept %d pairs, dropped %s", src, tgt, len(self.train_pairs), dict(dropped) or "none")
        if config.data.max_train_pairs:
            self.train_pairs = self.train_pairs[: config.data.max_train_pairs]
        self.val_pairs = load_pairs(data_dir, "val", src, tgt, clean=False)
        self.dropped = dict(dropped)
        sp_path = run_dir / "sentencepiece.model"
        if sp_path.exists():
            self.tokenizer = spm.SentencePieceProcessor(model_file=str(sp_path))
        else:
            text = [s for s, _ in self.train_pairs] + [t for _, t in self.train_pairs]
            self.tokenizer = train_sentencepiece(text, sp_path, config.data.vocab_size, config.data.vocab_type)
        eos = self.tokenizer.eos_id()
        self.train = [(self.tokenizer.encode(s) + [eos], self.tokenizer.encode(t)) for s, t in self.train_pairs]
        self.val = [(self.tokenizer.encode(s) + [eos], self.tokenizer.encode(t)) for s, t in self.val_pairs]


def translate_bleu(model: Seq2Seq, tokenizer: spm.SentencePieceProcessor, pairs: list[tuple[str, str]],
                   beam_size: int) -> tuple[float, list[str]]:
    translator = SentenceTranslator(TorchStepModel(model), tokenizer)
    hyps = [nbest[0].text for nbest in translator.translate([s for s, _ in pairs], SearchOptions(beam_size=beam_size))]
    return sacrebleu.corpus_bleu(hyps, [[t for _, t in pairs]]).score, hyps


def batch_loss(model: Seq2Seq, batch, label_smoothing: float) -> tuple[torch.Tensor, int, float]:
    """-> mean smoothed loss per target token, target token count, summed NLL (unsmoothed, for perplexity)."""
    src, lengths, tgt_in, tgt_out = batch
    logits = model(src, lengths, tgt_in)  # [B, T, V]
    flat_logits, flat_gold = logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1)
    pad = model.config.pad_id
    loss = F.cross_entropy(flat_logits, flat_gold, ignore_index=pad, label_smoothing=label_smoothing)
    n_tokens = int((flat_gold != pad).sum())
    with torch.no_grad():
        nll = F.cross_entropy(flat_logits, flat_gold, ignore_index=pad, reduction="sum").item()
    return loss, n_tokens, nll


@torch.no_grad()
def validation_loss(model: Seq2Seq, corpus: Corpus, max_tokens: int) -> float:
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for indices in token_batches(corpus.val, max_tokens, random.Random(0), shuffle=False):
        _, n_tokens, nll = batch_loss(model, collate(corpus.val, indices, model.config.bos_id, model.config.eos_id), 0.0)
        total_nll += nll
        total_tokens += n_tokens
    return total_nll / total_tokens


def train(config: RunConfig, run_dir: Path, data_dir: Path) -> dict:
    tc = config.train
    torch.set_num_threads(tc.threads)
    set_seed(tc.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(config, data_dir, run_dir)
    model_config = config.model_config(corpus.tokenizer.get_piece_size())
    model = Seq2Seq(model_config)
    log.info("model: %s, %d parameters", model_config.to_dict(), count_parameters(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=tc.lr_factor, patience=tc.lr_patience, min_lr=tc.min_lr)
    rng = random.Random(tc.seed)
    state = {"epoch": 0, "best_bleu": -1.0, "best_epoch": 0, "bad_epochs": 0, "step": 0}

    last = run_dir / "last.pt"
    if last.exists():
        checkpoint = torch.load(last, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = checkpoint["state"]
        rng.setstate(checkpoint["rng"])
        torch.set_rng_state(checkpoint["torch_rng"])
        log.info("resumed from %s at epoch %d", last, state["epoch"])

    metrics_path = run_dir / "metrics.jsonl"
    while state["epoch"] < tc.epochs and state["bad_epochs"] < tc.patience:
        epoch = state["epoch"] + 1
        model.train()
        batches = token_batches(corpus.train, tc.max_tokens, rng)
        started = time.perf_counter()
        sums = {"loss": 0.0, "nll": 0.0, "tokens": 0, "grad_norm": 0.0, "max_grad_norm": 0.0}
        progress = tqdm(batches, desc=f"epoch {epoch}", mininterval=10, unit="batch")
        for i, indices in enumerate(progress, 1):
            batch = collate(corpus.train, indices, model_config.bos_id, model_config.eos_id)
            loss, n_tokens, nll = batch_loss(model, batch, tc.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm))
            optimizer.step()
            state["step"] += 1
            sums["loss"] += loss.item() * n_tokens
            sums["nll"] += nll
            sums["tokens"] += n_tokens
            sums["grad_norm"] += grad_norm
            sums["max_grad_norm"] = max(sums["max_grad_norm"], grad_norm)
            if i % tc.log_every == 0:
                elapsed = time.perf_counter() - started
                progress.set_postfix(loss=f"{sums['loss'] / sums['tokens']:.3f}", grad=f"{grad_norm:.2f}",
                                     tok_s=f"{sums['tokens'] / elapsed:.0f}")
        train_seconds = time.perf_counter() - started
        val_nll = validation_loss(model, corpus, tc.max_tokens)
        val_bleu, _ = translate_bleu(model, corpus.tokenizer, corpus.val_pairs, tc.validate_beam)
        scheduler.step(val_bleu)
        improved = val_bleu > state["best_bleu"]
        state.update(epoch=epoch)
        if improved:
            state.update(best_bleu=val_bleu, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        record = {
            "epoch": epoch, "step": state["step"], "train_loss": sums["loss"] / sums["tokens"],
            "train_ppl": math.exp(sums["nll"] / sums["tokens"]), "val_loss": val_nll, "val_ppl": math.exp(val_nll),
            "val_bleu": val_bleu, "lr": optimizer.param_groups[0]["lr"],
            "grad_norm_mean": sums["grad_norm"] / len(batches), "grad_norm_max": sums["max_grad_norm"],
            "target_tokens_per_s": sums["tokens"] / train_seconds, "epoch_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - started - train_seconds,
        }
        log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                      for k, v in record.items()}))
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        checkpoint = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "state": state, "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
            "model_config": model_config.to_dict(), "run_config": config, "dropped_pairs": corpus.dropped,
        }
        if improved:
            torch.save({"model": model.state_dict(), "model_config": model_config.to_dict(), "epoch": epoch,
                        "val_bleu": val_bleu}, run_dir / "best.pt")
        torch.save(checkpoint, run_dir / "last.tmp")
        (run_dir / "last.tmp").replace(last)
    log.info("finished: best validation BLEU %.2f at epoch %d", state["best_bleu"], state["best_epoch"])
    return state


def parse_overrides(items: list[str]) -> dict:
    """``section.key=value`` strings -> dict with YAML-parsed values."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, help="default: runs/<config name>")
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"), help="verified corpus cache")
    parser.add_argument("--mirror", type=Path, help="local Multi30k mirror (else $MT_MULTI30K_MIRROR, else download)")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="override config values")
    args = parser.parse_args()
    config = load_config(args.config, parse_overrides(args.set))
    run_dir = args.run_dir or Path("runs") / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")])
    fetch_multi30k(args.data_dir, args.mirror)
    train(config, run_dir, args.data_dir)


if __name__ == "__main__":
    main()
