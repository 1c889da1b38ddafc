"""Train an attention Seq2Seq on the corpora a config names (default: Multi30k).

    python -m training.train --config training/configs/de-en.yaml [--run-dir runs/de-en] [--mirror DIR]
    torchrun --nproc_per_node 2 -m training.train --config ...   # DistributedDataParallel (gloo/nccl)

The run directory holds the SentencePiece model, ``last.pt`` (resumable), ``best.pt`` (best validation
BLEU), ``metrics.jsonl`` (one line per epoch) and ``train.log``. Re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import sacrebleu
import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from training.batching import collate, token_batches
from training.config import RunConfig, load_config
from training.distributed import (DistContext, all_sum, barrier, broadcast, init_distributed, ranks_in_sync, shard,
                                  shutdown)
from training.corpus_config import ConfigError
from training.corpus_readers import CorpusError
from training.datasets import prepare_data
from training.model import Seq2Seq, count_parameters
from training.precision import Precision, choose_precision
from training.torch_step_model import TorchStepModel
from training.vocab import train_sentencepiece

log = logging.getLogger("training")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Corpus:
    """The run's training and validation pairs (from every corpus its config names), tokenized with its
    SentencePiece model (trained on the training pairs on first use, then read back from the run directory)."""

    def __init__(self, config: RunConfig, run_dir: Path, multi30k_dir: Path | None = None,
                 mirror: Path | None = None) -> None:
        data = prepare_data(config.sources, config.source, config.target, config.data.cleaning_rules(),
                            multi30k_dir, mirror)
        self.train_pairs = data.train[: config.data.max_train_pairs]
        self.val_pairs = data.valid_pairs[: config.data.max_val_pairs]
        self.report = data.report
        (run_dir / "data.json").write_text(json.dumps(self.report, indent=2, ensure_ascii=False) + "\n")
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
                   beam_size: int) -> float:
    """Corpus BLEU of the model's translations of ``pairs``, decoded by the service's own search."""
    translator = SentenceTranslator(TorchStepModel(model), tokenizer)
    hyps = [nbest[0].text for nbest in translator.translate([s for s, _ in pairs], SearchOptions(beam_size=beam_size))]
    return sacrebleu.corpus_bleu(hyps, [[t for _, t in pairs]]).score


def batch_loss(net: torch.nn.Module, batch, pad_id: int, label_smoothing: float) -> tuple[torch.Tensor, int, float]:
    """net: the Seq2Seq (or its DDP wrapper). -> mean smoothed loss per target token, target token count,
    summed NLL (unsmoothed, for perplexity)."""
    src, lengths, tgt_in, tgt_out = batch
    logits = net(src, lengths, tgt_in)  # [B, T, V]
    flat_logits, flat_gold = logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_gold, ignore_index=pad_id, label_smoothing=label_smoothing)
    n_tokens = int((flat_gold != pad_id).sum())
    with torch.no_grad():
        nll = F.cross_entropy(flat_logits, flat_gold, ignore_index=pad_id, reduction="sum").item()
    return loss, n_tokens, nll


def to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """On CUDA, copy from pinned memory asynchronously; lengths stay on the CPU (packing wants them there)."""
    src, lengths, tgt_in, tgt_out = batch
    if device.type != "cuda":
        return src, lengths, tgt_in, tgt_out
    return tuple(t.pin_memory().to(device, non_blocking=True) if t is not lengths else t
                 for t in (src, lengths, tgt_in, tgt_out))


@torch.no_grad()
def validation_loss(model: Seq2Seq, corpus: Corpus, max_tokens: int, device: torch.device) -> float:
    model.eval()
    total_nll, total_tokens = 0.0, 0
    c = model.config
    for indices in token_batches(corpus.val, max_tokens, random.Random(0), shuffle=False):
        batch = to_device(collate(corpus.val, indices, c.bos_id, c.eos_id, c.pad_id), device)
        _, n_tokens, nll = batch_loss(model, batch, c.pad_id, 0.0)
        total_nll += nll
        total_tokens += n_tokens
    return total_nll / total_tokens


def train_epoch(net: torch.nn.Module, model: Seq2Seq, optimizer: torch.optim.Optimizer, batches: list[list[int]],
                corpus: Corpus, config: RunConfig, ctx: DistContext, epoch: int, precision: Precision) -> dict:
    """One pass over this rank's batches. -> summed statistics of this rank."""
    tc, c = config.train, model.config
    net.train()
    started = time.perf_counter()
    sums = {"loss": 0.0, "nll": 0.0, "tokens": 0, "steps": 0, "grad_norms": []}
    progress = tqdm(batches, desc=f"epoch {epoch}", mininterval=10, unit="batch", disable=not ctx.is_main)
    for indices in progress:
        batch = to_device(collate(corpus.train, indices, c.bos_id, c.eos_id, c.pad_id), ctx.device)
        with precision.autocast():
            loss, n_tokens, nll = batch_loss(net, batch, c.pad_id, tc.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        # under DDP, gradients are averaged across ranks during backward
        grad_norm = precision.backward_and_step(loss, optimizer, model.parameters(), tc.clip_norm)
        sums["steps"] += 1
        sums["loss"] += loss.item() * n_tokens
        sums["nll"] += nll
        sums["tokens"] += n_tokens
        sums["grad_norms"].append(grad_norm)
        if sums["steps"] % tc.log_every == 0:
            elapsed = time.perf_counter() - started
            progress.set_postfix(loss=f"{sums['loss'] / sums['tokens']:.3f}", grad=f"{grad_norm:.2f}",
                                 tok_s=f"{sums['tokens'] * ctx.world_size / elapsed:.0f}")
    sums["seconds"] = time.perf_counter() - started
    return sums


def grad_norm_statistics(norms: list[float], clip_norm: float) -> dict:
    """Summary of the per-step gradient norms (before clipping) of one epoch."""
    values = np.asarray(norms) if norms else np.zeros(1)
    return {"grad_norm_mean": float(values.mean()), "grad_norm_p50": float(np.percentile(values, 50)),
            "grad_norm_p99": float(np.percentile(values, 99)), "grad_norm_max": float(values.max()),
            "grad_norm_min": float(values.min()), "clipped_fraction": float((values > clip_norm).mean())}


def train(config: RunConfig, run_dir: Path, data_dir: Path | None = None, mirror: Path | None = None) -> dict:
    """Train (or resume) a run. Under torchrun each rank trains on its shard of every epoch's batches;
    rank 0 alone evaluates, logs and writes checkpoints."""
    tc = config.train
    ctx = init_distributed(tc.device)
    precision = choose_precision(tc.precision, ctx.device)
    torch.set_num_threads(tc.threads)
    set_seed(tc.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "last.pt"
    init = None if last.exists() or not tc.init_from else load_init_checkpoint(Path(tc.init_from), run_dir, ctx)
    if ctx.is_main:
        corpus = Corpus(config, run_dir, data_dir, mirror)  # trains the SentencePiece model once
    barrier(ctx)
    if not ctx.is_main:
        corpus = Corpus(config, run_dir, data_dir, mirror)
    model_config = config.model_config(corpus.tokenizer.get_piece_size())
    if init is not None and init["model_config"] != model_config.to_dict():
        raise ConfigError(f"train.init_from {tc.init_from}: its model {init['model_config']} differs from "
                          f"this config's {model_config.to_dict()}")
    model = Seq2Seq(model_config)
    if init is not None:
        model.load_state_dict(init["model"])
        if ctx.is_main:
            log.info("initialized from %s (epoch %s)", tc.init_from, init.get("epoch"))
    model = model.to(ctx.device)
    net = DistributedDataParallel(model) if ctx.enabled else model
    if ctx.is_main:
        log.info("model: %s, %d parameters, %d process(es) on %s, %s", model_config.to_dict(),
                 count_parameters(model), ctx.world_size, ctx.device, precision.name)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=tc.lr_factor, patience=tc.lr_patience, min_lr=tc.min_lr)
    rng = random.Random(tc.seed)  # same seed on every rank: identical batch lists, sharded afterwards
    state = {"epoch": 0, "best_bleu": -1.0, "best_epoch": 0, "bad_epochs": 0, "step": 0}

    if last.exists():
        checkpoint = torch.load(last, weights_only=False, map_location=ctx.device)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = checkpoint["state"]
        rng.setstate(checkpoint["rng"])
        torch.set_rng_state(checkpoint["torch_rng"].cpu())
        if ctx.device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"].cpu(), ctx.device)
        if precision.scaler is not None and checkpoint.get("grad_scaler"):
            precision.scaler.load_state_dict(checkpoint["grad_scaler"])
        if ctx.is_main:
            log.info("resumed from %s at epoch %d", last, state["epoch"])

    metrics_path = run_dir / "metrics.jsonl"
    while state["epoch"] < tc.epochs and state["bad_epochs"] < tc.patience:
        epoch = state["epoch"] + 1
        batches = shard(token_batches(corpus.train, tc.max_tokens, rng), ctx)
        sums = train_epoch(net, model, optimizer, batches, corpus, config, ctx, epoch, precision)
        state["step"] += sums["steps"]
        in_sync = ranks_in_sync(model, ctx)
        tokens, loss_sum, nll_sum = (all_sum(sums[k], ctx) for k in ("tokens", "loss", "nll"))
        eval_started = time.perf_counter()
        val_nll = val_bleu = None
        if ctx.is_main:
            val_nll = validation_loss(model, corpus, tc.max_tokens, ctx.device)
            val_bleu = translate_bleu(model, corpus.tokenizer, corpus.val_pairs, tc.validate_beam)
        val_bleu = broadcast(val_bleu, ctx)
        scheduler.step(val_bleu)  # on every rank, so learning rates stay identical
        improved = val_bleu > state["best_bleu"]
        state["epoch"] = epoch
        if improved:
            state.update(best_bleu=val_bleu, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        if ctx.is_main:
            record = {
                "epoch": epoch, "step": state["step"], "train_loss": loss_sum / tokens,
                "train_ppl": math.exp(nll_sum / tokens), "val_loss": val_nll, "val_ppl": math.exp(val_nll),
                "val_bleu": val_bleu, "lr": optimizer.param_groups[0]["lr"],
                **grad_norm_statistics(sums["grad_norms"], tc.clip_norm),
                "target_tokens_per_s": tokens / sums["seconds"], "epoch_seconds": sums["seconds"],
                "eval_seconds": time.perf_counter() - eval_started, "world_size": ctx.world_size,
                "ranks_in_sync": in_sync, "device": str(ctx.device), "precision": precision.name,
            }
            log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                          for k, v in record.items()}))
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            save_checkpoints(run_dir, model, optimizer, scheduler, state, rng, config, corpus, improved, val_bleu,
                             precision)
        if not in_sync:
            raise RuntimeError("parameters differ between ranks: distributed training is broken")
        barrier(ctx)
    if ctx.is_main:
        log.info("finished: best validation BLEU %.2f at epoch %d", state["best_bleu"], state["best_epoch"])
    shutdown(ctx)
    return state


def load_init_checkpoint(path: Path, run_dir: Path, ctx: DistContext) -> dict:
    """The weights a fine-tuning run starts from. Their SentencePiece model (next to the checkpoint) becomes the
    run's, since the weights only mean something with the vocabulary they were trained on."""
    tokenizer = path.parent / "sentencepiece.model"
    if not path.is_file() or not tokenizer.is_file():
        raise ConfigError(f"train.init_from {path}: needs the checkpoint and {tokenizer.name} next to it")
    ours = run_dir / "sentencepiece.model"
    if ours.exists() and ours.read_bytes() != tokenizer.read_bytes():
        raise ConfigError(f"train.init_from {path}: {ours} is another vocabulary; use a new run directory")
    if ctx.is_main and not ours.exists():
        shutil.copyfile(tokenizer, ours)
    barrier(ctx)
    checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_config" not in checkpoint:
        raise ConfigError(f"train.init_from {path}: not a training checkpoint (no model weights and config)")
    return checkpoint


def save_checkpoints(run_dir: Path, model: Seq2Seq, optimizer, scheduler, state: dict, rng: random.Random,
                     config: RunConfig, corpus: Corpus, improved: bool, val_bleu: float, precision: Precision) -> None:
    """last.pt (everything needed to resume, written atomically), on a new best best.pt (weights only), and
    with ``train.keep_epochs`` K > 0 the weights of the last K epochs as epoch-N.pt (for training.average)."""
    model_config = model.config.to_dict()
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    epoch = state["epoch"]
    if improved:
        torch.save({"model": weights, "model_config": model_config, "epoch": epoch, "val_bleu": val_bleu},
                   run_dir / "best.pt")
    keep = config.train.keep_epochs
    if keep > 0:
        torch.save({"model": weights, "model_config": model_config, "epoch": epoch, "val_bleu": val_bleu},
                   run_dir / f"epoch-{epoch}.pt")
        (run_dir / f"epoch-{epoch - keep}.pt").unlink(missing_ok=True)
    checkpoint = {
        "model": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "state": state, "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
        "model_config": model_config, "run_config": config, "data_report": corpus.report,
        "grad_scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
        "cuda_rng": torch.cuda.get_rng_state(model_device) if (model_device := next(model.parameters()).device).type
        == "cuda" else None,
    }
    torch.save(checkpoint, run_dir / "last.tmp")
    (run_dir / "last.tmp").replace(run_dir / "last.pt")


def parse_overrides(items: list[str]) -> dict:
    """``section.key=value`` strings -> dict with YAML-parsed values."""
    import yaml

    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, help="default: runs/<config name>")
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"), help="verified Multi30k cache")
    parser.add_argument("--mirror", type=Path, help="local Multi30k mirror (else $MT_MULTI30K_MIRROR, else download)")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="override config values")
    args = parser.parse_args()
    try:
        config = load_config(args.config, parse_overrides(args.set))
    except ConfigError as error:
        parser.exit(2, f"error: {error}\n")
    run_dir = args.run_dir or Path("runs") / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if os.environ.get("RANK", "0") == "0":
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)
    try:
        train(config, run_dir, args.data_dir, args.mirror)
    except CorpusError as error:  # raised while the data is prepared, before the first training step
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
