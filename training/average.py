"""Checkpoint averaging: the mean of the weights of several epochs, often better than any one of them.

    python -m training.average --run-dir runs/de-en --last 4      # or --epochs 11 12 13 14

Reads ``epoch-N.pt`` (written with ``train.keep_epochs``), writes ``averaged.pt`` in the format of
``best.pt``, and prints the greedy validation BLEU of the average beside that of ``best.pt``, both decoded
by the shared search on the run's validation sets, so the choice between them is made on validation data.
Export either with ``training.export --checkpoint``.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import sentencepiece as spm
import torch

from training.datasets import prepare_data
from training.model import ModelConfig, Seq2Seq

log = logging.getLogger("training.average")


def available_epochs(run_dir: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in run_dir.glob("epoch-*.pt") if (m := re.fullmatch(r"epoch-(\d+)\.pt", p.name)))


def average_weights(paths: list[Path]) -> dict:
    """-> a best.pt-style checkpoint whose floating-point tensors are the mean over ``paths``."""
    checkpoints = [torch.load(p, weights_only=False, map_location="cpu") for p in paths]
    configs = {str(c["model_config"]) for c in checkpoints}
    if len(configs) != 1:
        raise ValueError("the checkpoints have different model configs")
    averaged = {}
    for name, first in checkpoints[0]["model"].items():
        if first.is_floating_point():
            averaged[name] = torch.stack([c["model"][name] for c in checkpoints]).mean(dim=0)
        else:
            averaged[name] = first
    epochs = [c["epoch"] for c in checkpoints]
    return {"model": averaged, "model_config": checkpoints[0]["model_config"], "epoch": max(epochs),
            "averaged_epochs": epochs}


def main() -> None:
    from training.train import translate_bleu

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--last", type=int, help="average the last N kept epochs")
    group.add_argument("--epochs", type=int, nargs="+", help="average these epochs")
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"), help="verified Multi30k cache")
    parser.add_argument("--mirror", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    kept = available_epochs(args.run_dir)
    epochs = args.epochs or kept[-args.last:]
    missing = sorted(set(epochs) - set(kept))
    if missing or not epochs:
        parser.error(f"no epoch-N.pt for epochs {missing or epochs} in {args.run_dir} (kept: {kept})")
    checkpoint = average_weights([args.run_dir / f"epoch-{n}.pt" for n in epochs])

    run_config = torch.load(args.run_dir / "last.pt", weights_only=False, map_location="cpu")["run_config"]
    data = prepare_data(run_config.sources, run_config.source, run_config.target, run_config.data.cleaning_rules(),
                        args.data_dir, args.mirror)
    valid = data.valid_pairs[: run_config.data.max_val_pairs]
    tokenizer = spm.SentencePieceProcessor(model_file=str(args.run_dir / "sentencepiece.model"))
    model = Seq2Seq(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    checkpoint["val_bleu"] = translate_bleu(model, tokenizer, valid, beam_size=1)
    torch.save(checkpoint, args.run_dir / "averaged.pt")
    best = torch.load(args.run_dir / "best.pt", weights_only=False, map_location="cpu")
    print(f"validation BLEU (greedy, {len(valid)} pairs): average of epochs {epochs}: {checkpoint['val_bleu']:.2f}; "
          f"best.pt (epoch {best['epoch']}): {best['val_bleu']:.2f} -> {args.run_dir / 'averaged.pt'}")


if __name__ == "__main__":
    main()
