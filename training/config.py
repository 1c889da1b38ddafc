"""Training run configuration: one YAML file per shipped model under training/configs/."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from training.cleaning import CleaningRules
from training.corpus_config import ConfigError, DataSources, parse_sources
from training.model import ModelConfig


@dataclass
class DataConfig:
    vocab_size: int = 8000
    vocab_type: str = "unigram"  # or "bpe"
    max_words: int = 80
    max_length_ratio: float = 3.0
    deduplicate: bool = True  # drop exact duplicate pairs
    language_id: bool = False  # drop pairs with a side identified as another language
    max_train_pairs: int | None = None  # subsample for quick experiments and tests
    max_val_pairs: int | None = None  # validate on the first N pairs only (quick experiments and tests)
    corpora: list | None = None  # see training/corpus_config.py; default: Multi30k's own splits
    train: list | None = None
    valid: list | None = None
    test: list | None = None

    def cleaning_rules(self) -> CleaningRules:
        return CleaningRules(max_words=self.max_words, max_length_ratio=self.max_length_ratio,
                             deduplicate=self.deduplicate, language_id=self.language_id)

    def sources(self, source: str, target: str) -> DataSources:
        raw = {k: v for k, v in (("corpora", self.corpora), ("train", self.train), ("valid", self.valid),
                                 ("test", self.test)) if v is not None}
        return parse_sources(raw, source, target)


@dataclass
class TrainConfig:
    device: str = "auto"  # auto (cuda when a GPU is visible) | cpu | cuda
    precision: str = "auto"  # auto (bf16 where the GPU supports it, else fp16; fp32 on CPU) | fp32 | bf16 | fp16
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
    keep_epochs: int = 0  # keep the weights of the last K epochs (epoch-N.pt) for checkpoint averaging
    # Fine-tuning: start from this checkpoint's weights (best.pt, epoch-N.pt, averaged.pt; its run directory's
    # SentencePiece model comes along) with a fresh optimizer and schedule. Ignored once the run has a last.pt.
    init_from: str | None = None


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

    @property
    def sources(self) -> DataSources:
        return self.data.sources(self.source, self.target)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **self.model)


def _build(cls, values: dict | None):
    values = values or {}
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**values)


def load_config(path: Path, overrides: dict | None = None) -> RunConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config ({error})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    missing = [key for key in ("name", "source", "target") if key not in raw]
    if missing:
        raise ConfigError(f"{path}: missing {missing}")
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    config = RunConfig(
        name=raw["name"], source=raw["source"], target=raw["target"], model=raw.get("model", {}),
        data=_build(DataConfig, raw.get("data")), train=_build(TrainConfig, raw.get("train")),
        eval=_build(EvalConfig, raw.get("eval")),
    )
    config.sources  # validates languages and corpora now, before any data is read
    return config
