"""Training run configuration: one YAML file per shipped model under training/configs/."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from training.model import ModelConfig


@dataclass
class DataConfig:
    vocab_size: int = 8000
    vocab_type: str = "unigram"  # or "bpe"
    max_words: int = 80
    max_length_ratio: float = 3.0
    max_train_pairs: int | None = None  # subsample for quick experiments and tests
    max_val_pairs: int | None = None  # validate on the first N pairs only (quick experiments and tests)


@dataclass
class TrainConfig:
    seed: int = 1
    threads: int = 2
    max_tokens: int = 4096  # source + target tokens per batch (token-bucketed)
    epochs: int = 20
    lr: float = 1e-3
    min_lr: float = 1e-5
    lr_factor: float = 0.5  # reduce-on-plateau factor on validation BLEU
    lr_patience: int = 1
    patience: int = 4  # early stopping: epochs without a new best validation BLEU
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    validate_beam: int = 1
    log_every: int = 50


@dataclass
class EvalConfig:
    beam_size: int = 5
    length_penalty: float = 1.0


@dataclass
class RunConfig:
    name: str
    source: str
    target: str
    model: dict = field(default_factory=dict)  # ModelConfig fields except vocab_size
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **self.model)


def _build(cls, values: dict | None):
    values = values or {}
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**values)


def load_config(path: Path, overrides: dict | None = None) -> RunConfig:
    raw = yaml.safe_load(Path(path).read_text())
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    return RunConfig(
        name=raw["name"], source=raw["source"], target=raw["target"], model=raw.get("model", {}),
        data=_build(DataConfig, raw.get("data")), train=_build(TrainConfig, raw.get("train")),
        eval=_build(EvalConfig, raw.get("eval")),
    )
