"""Export a trained run to models/<src>-<tgt>/: encoder and decoder-step ONNX graphs, tokenizer, model card.

    python -m training.export --run-dir runs/de-en --out models/de-en [--quantize] [--checkpoint averaged.pt]

Parity with PyTorch is checked before anything is written as final: max |log-prob difference| over
validation batches must be <= 1e-4 and greedy outputs must be identical on the whole validation set.
Export fails loudly otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from inference.card import ModelCard, read_card, write_card
from inference.onnx_model import OnnxGraphs, OnnxSeq2Seq
from inference.search import SearchOptions, pad_batch, search
from inference.step_model import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, TOP_K_INPUT,
                                  TOP_K_OUTPUTS)
from training.model import ModelConfig, Seq2Seq, count_parameters
from training.top_k_graph import add_top_k
from training.torch_step_model import TorchStepModel

log = logging.getLogger("training.export")
OPSET = 17
LOGPROB_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The exported graphs do not reproduce the PyTorch model."""


class _EncoderGraph(nn.Module):
    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor):
        return self.model.encode(src_tokens, src_lengths)


class _DecoderStepGraph(nn.Module):
    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, prev_tokens, state, memory, memory_keys, memory_mask):
        return self.model.decode_step(prev_tokens, state, memory, memory_keys, memory_mask)


def load_run(run_dir: Path, checkpoint_name: str = "best.pt") -> tuple[Seq2Seq, dict]:
    """best.pt (or another weights file) of a run -> model in eval mode, checkpoint metadata."""
    checkpoint = torch.load(run_dir / checkpoint_name, weights_only=False, map_location="cpu")
    model = Seq2Seq(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def export_graphs(model: Seq2Seq, out_dir: Path) -> None:
    """Write encoder.onnx and decoder.onnx with dynamic batch and source-length axes (legacy exporter)."""
    src = torch.tensor([[5, 6, 7, 8, 3], [9, 10, 3, 0, 0]])
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        memory, keys, mask, state = model.encode(src, lengths)
    batch, source = {0: "batch"}, {0: "batch", 1: "source"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            _EncoderGraph(model), (src, lengths), str(out_dir / "encoder.onnx"), dynamo=False, opset_version=OPSET,
            input_names=ENCODER_INPUTS, output_names=ENCODER_OUTPUTS,
            dynamic_axes={"src_tokens": source, "src_lengths": batch, "memory": source, "memory_keys": source,
                          "memory_mask": source, "init_state": batch},
        )
        torch.onnx.export(
            _DecoderStepGraph(model), (torch.tensor([2, 2]), state, memory, keys, mask), str(out_dir / "decoder.onnx"),
            dynamo=False, opset_version=OPSET, input_names=DECODER_INPUTS, output_names=DECODER_OUTPUTS,
            dynamic_axes={"prev_tokens": batch, "state": batch, "memory": source, "memory_keys": source,
                          "memory_mask": source, "log_probs": batch, "new_state": batch, "attention": source},
        )
    for name in ("encoder.onnx", "decoder.onnx"):
        onnx.checker.check_model(str(out_dir / name))
    add_top_k(out_dir / "decoder.onnx")


def logprob_parity(model: Seq2Seq, onnx_model: OnnxGraphs, sources: list[list[int]], batch_size: int = 32,
                   steps: int = 8) -> float:
    """Max |log-prob diff| between PyTorch and ONNX over teacher-free decoding steps of padded batches."""
    torch_model = TorchStepModel(model)
    worst = 0.0
    for start in range(0, len(sources), batch_size):
        src, lengths = pad_batch(sources[start : start + batch_size])
        enc_torch, enc_onnx = torch_model.encode(src, lengths), onnx_model.encode(src, lengths)
        prev = np.full(len(lengths), model.config.bos_id, dtype=np.int64)
        state_t, state_o = enc_torch.state, enc_onnx.state
        for _ in range(steps):
            lp_t, state_t, _ = torch_model.step(prev, state_t, enc_torch)
            lp_o, state_o, _ = onnx_model.step(prev, state_o, enc_onnx)
            worst = max(worst, float(np.abs(lp_t - lp_o).max()))
            prev = lp_t.argmax(axis=1)
            state_o = state_t  # compare each step from the same state, so errors don't compound
    return worst


def greedy_agreement(model: Seq2Seq, onnx_model: OnnxGraphs, sources: list[list[int]], batch_size: int = 64) -> int:
    """Number of sources whose greedy output is identical under PyTorch and ONNX."""
    torch_model, same = TorchStepModel(model), 0
    options = SearchOptions(beam_size=1)
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        for a, b in zip(search(torch_model, chunk, options), search(onnx_model, chunk, options)):
            same += a[0].tokens == b[0].tokens
    return same


def quantize_decoder(out_dir: Path) -> None:
    """Dynamic int8 quantization of the decoder step; unsigned weights keep accuracy on CPUs without VNNI."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(out_dir / "decoder.onnx"), str(out_dir / "decoder.int8.onnx"), weight_type=QuantType.QUInt8)


def training_section(run_dir: Path) -> dict:
    """What the run trained on, for the card: corpora with domains, licences, sizes and cleaning counts, and
    the recipe (corpora, held-out splits, cleaning rules) that ``training.evaluate`` rebuilds test sets from."""
    data_report = json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
    run_config = torch.load(run_dir / "last.pt", weights_only=False, map_location="cpu")["run_config"]
    sources, rules = run_config.sources, run_config.data.cleaning_rules()
    corpora = []
    for name, entry in data_report["corpora"].items():
        cleaning = entry.get("cleaning", {})
        corpora.append({"name": name, "description": entry.get("description", ""), "domain": entry["domain"],
                        "licence": entry["licence"], "format": entry["format"], "weight": entry["weight"],
                        "train_pairs": entry.get("train_pairs", 0),
                        "cleaning": {k: cleaning[k] for k in ("read", "kept", "dropped") if k in cleaning},
                        **({"held_out_recipe": entry["held_out_recipe"]} if "held_out_recipe" in entry else {})})
    used = [c for c in corpora if c["train_pairs"]]
    return {
        "data": "; ".join(f"{c['description'] or c['name']}: {c['train_pairs']:,} training pairs" for c in used),
        "domains": sorted({c["domain"] for c in used if c["domain"]}),
        "licence": " | ".join(f"{c['name']}: {c['licence']}" for c in used if c["licence"]),
        "corpora": corpora,
        "splits": data_report["splits"],
        "data_recipe": sources.to_dict(),
        "cleaning_rules": asdict(rules),
    }


def export_run(run_dir: Path, out_dir: Path, source: str, target: str, validation_sources: list[str],
               quantize: bool = False, epochs_trained: int | None = None, checkpoint_name: str = "best.pt",
               evaluation_sets_sha256: dict[str, str] | None = None, initialized_from: str | None = None
               ) -> ModelCard:
    """Export, verify parity, and write the model card (scores are added later by training.evaluate).
    ``initialized_from``: the run's ``train.init_from`` (the weights it was fine-tuned from), recorded in the card."""
    model, checkpoint = load_run(run_dir, checkpoint_name)
    config = model.config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-export-", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        export_graphs(model, staging)
        shutil.copy(run_dir / "sentencepiece.model", staging / "sentencepiece.model")
        files = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "tokenizer": "sentencepiece.model"}
        card = {
            "id": f"{source}-{target}",
            "source_language": source,
            "target_language": target,
            "architecture": {**config.to_dict(), "parameters": count_parameters(model), "type": "seq2seq-rnn"},
            "vocabulary": {"type": "sentencepiece", "size": config.vocab_size, "pad_id": config.pad_id,
                           "unk_id": 1, "bos_id": config.bos_id, "eos_id": config.eos_id,
                           "source_appends_eos": True, "shared_source_target": True},
            "files": files,
            "graphs": {"opset": OPSET,
                       "encoder": {"inputs": ENCODER_INPUTS, "outputs": ENCODER_OUTPUTS},
                       "decoder": {"inputs": DECODER_INPUTS + [TOP_K_INPUT],
                                   "outputs": DECODER_OUTPUTS + TOP_K_OUTPUTS}},
            "decoding_defaults": {"beam_size": 5, "length_penalty": 1.0, "max_length_ratio": 2.0,
                                  "max_length_offset": 10},
            "training": {**training_section(run_dir), "epochs_trained": epochs_trained or checkpoint["epoch"],
                         "exported_weights": (f"average of epochs {checkpoint['averaged_epochs']}"
                                              if "averaged_epochs" in checkpoint else f"epoch {checkpoint['epoch']}"),
                         "val_bleu_greedy": checkpoint["val_bleu"],
                         **({"initialized_from": initialized_from} if initialized_from else {}),
                         **({"evaluation_sets_sha256": evaluation_sets_sha256} if evaluation_sets_sha256 else {})},
        }
        write_card(staging, card)
        onnx_model = OnnxSeq2Seq(staging)
        tokenizer = onnx_model.tokenizer
        sources = [tokenizer.encode(s) + [config.eos_id] for s in validation_sources]
        sources.sort(key=len)
        max_diff = logprob_parity(model, onnx_model, sources)
        agreeing = greedy_agreement(model, onnx_model, sources)
        card["parity"] = {"max_abs_logprob_diff": max_diff, "tolerance": LOGPROB_TOLERANCE,
                          "greedy_identical": agreeing, "sentences": len(sources), "set": "val"}
        log.info("parity: max |log-prob diff| %.2e, greedy identical %d/%d", max_diff, agreeing, len(sources))
        if max_diff > LOGPROB_TOLERANCE or agreeing != len(sources):
            raise ParityError(f"ONNX export does not match PyTorch: {card['parity']}")
        if quantize:
            quantize_decoder(staging)
            files["decoder_int8"] = "decoder.int8.onnx"  # training.evaluate removes it if it costs > 0.3 BLEU
        write_card(staging, card)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return read_card(out_dir)


def main() -> None:
    from training.datasets import prepare_data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="model directory, e.g. models/de-en")
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"), help="verified Multi30k cache")
    parser.add_argument("--mirror", type=Path)
    parser.add_argument("--quantize", action="store_true", help="also write an int8 decoder (decoder.int8.onnx)")
    parser.add_argument("--checkpoint", default="best.pt", help="weights file in the run directory (best.pt, or "
                        "averaged.pt from training.average)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    checkpoint = torch.load(args.run_dir / "last.pt", weights_only=False, map_location="cpu")
    run_config, epochs_trained = checkpoint["run_config"], checkpoint["state"]["epoch"]
    data = prepare_data(run_config.sources, run_config.source, run_config.target, run_config.data.cleaning_rules(),
                        args.data_dir, args.mirror)
    card = export_run(args.run_dir, args.out, run_config.source, run_config.target,
                      [s for s, _ in data.valid_pairs], args.quantize, epochs_trained, args.checkpoint,
                      data.fingerprints(), run_config.train.init_from)
    print(json.dumps(card.parity, indent=2))


if __name__ == "__main__":
    main()
