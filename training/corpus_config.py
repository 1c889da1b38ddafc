"""The ``data`` section of a training config: which corpora, in which format, and where validation and test come from.

    data:
      corpora:
        - name: multi30k
          preset: multi30k                  # fetched (pinned, checksummed) or read from $MT_MULTI30K_MIRROR
        - name: tatoeba
          format: tsv                       # tsv | csv | moses | jsonl | tmx (each may be gzipped)
          path: ../shared/data/tatoeba/deu-eng.tsv.gz
          columns: {de: 0, en: 1}           # language -> column index, or header name with header: true
          weight: 1.0                       # oversampling factor for training
          held_out: {valid: 1000, test: 2000}   # carved out of this corpus (seeded, grouped by sentence)
          seed: 1
      train: [multi30k, tatoeba]            # default: every corpus (whole, minus what is held out)
      valid: [multi30k:val, tatoeba:valid]  # "corpus:part"; a corpus named alone is used whole
                                            # default: every held_out part named "valid"
      test: [multi30k:test2016, tatoeba:test]

Everything here is checked when the config is read, before any data is touched: a mistake stops with one
message naming the corpus and the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from inference.languages import NAMES

FORMATS = ("tsv", "csv", "moses", "jsonl", "tmx")
_DEFAULTED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")
PRESET_SPLITS = {"multi30k": ("train", "val", "test2016")}
PRESET_LANGUAGES = {"multi30k": ("en", "de", "fr")}
WHOLE = "all"


class ConfigError(ValueError):
    """The training config is wrong; the message names the field."""


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    preset: str | None = None
    format: str | None = None
    path: str | None = None  # one-file formats
    paths: dict[str, str] = field(default_factory=dict)  # moses: language -> file
    columns: dict[str, str | int] = field(default_factory=dict)  # tsv/csv: column; jsonl: key (default: the code)
    header: bool = False  # tsv/csv: the first row names the columns
    url: str | None = None  # fetched to ``path`` when that file is missing
    sha256: str | None = None  # of the decompressed file; checked on every read
    weight: float = 1.0
    held_out: dict[str, int] = field(default_factory=dict)
    seed: int = 1
    licence: str = ""
    domain: str = ""
    description: str = ""

    @property
    def parts(self) -> tuple[str, ...]:
        """Names usable as ``corpus:part``; "train" is what remains for training."""
        if self.preset:
            return PRESET_SPLITS[self.preset]
        return (WHOLE, "train", *self.held_out)

    def resolved(self, path: str) -> Path:
        """``~`` and ``$VAR`` expanded; ``${VAR:-default}`` takes the default when VAR is unset or empty."""
        path = _DEFAULTED_VARIABLE.sub(lambda m: os.environ.get(m.group(1)) or m.group(2), path)
        return Path(os.path.expandvars(os.path.expanduser(path)))


@dataclass(frozen=True)
class DataSources:
    corpora: tuple[CorpusSpec, ...]
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    def corpus(self, name: str) -> CorpusSpec:
        return next(c for c in self.corpora if c.name == name)

    def to_dict(self) -> dict:
        return {"corpora": [{k: v for k, v in asdict(c).items() if v not in (None, {}, "")} for c in self.corpora],
                "train": list(self.train), "valid": list(self.valid), "test": list(self.test)}


DEFAULT_SOURCES = {"corpora": [{"name": "multi30k", "preset": "multi30k"}], "train": ["multi30k"],
                   "valid": ["multi30k:val"], "test": ["multi30k:test2016"]}


def check_language(code: object, where: str) -> str:
    if not isinstance(code, str) or code not in NAMES:
        raise ConfigError(f"{where}: {code!r} is not an ISO 639-1 code the service can name "
                          f"(known: {', '.join(sorted(NAMES))})")
    return code


def parse_sources(raw: dict | None, source: str, target: str) -> DataSources:
    """Validate the corpora/train/valid/test keys of the ``data`` section (defaults: Multi30k's own splits)."""
    check_language(source, "source")
    check_language(target, "target")
    if source == target:
        raise ConfigError(f"source and target are both {source!r}")
    raw = dict(raw or {})
    if "corpora" not in raw:
        if any(key in raw for key in ("train", "valid", "test")):
            raise ConfigError("data: train/valid/test name corpora, but data.corpora is missing")
        raw = {**DEFAULT_SOURCES}
    if not isinstance(raw["corpora"], list) or not raw["corpora"]:
        raise ConfigError("data.corpora: expected a non-empty list of corpora")
    corpora = tuple(_parse_corpus(entry, i, source, target) for i, entry in enumerate(raw["corpora"]))
    names = [c.name for c in corpora]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"data.corpora: names used twice: {duplicated}")
    by_name = {c.name: c for c in corpora}
    train = tuple(_names(raw.get("train", names), "data.train"))
    for name in train:
        if name not in by_name:
            raise ConfigError(f"data.train: no corpus named {name!r} (corpora: {names})")
    if not train:
        raise ConfigError("data.train: no training corpus")
    default_valid = [f"{c.name}:valid" for c in corpora if "valid" in c.held_out]
    valid = tuple(_check_ref(r, by_name, train, "data.valid")
                  for r in _names(raw.get("valid", default_valid), "data.valid"))
    test = tuple(_check_ref(r, by_name, train, "data.test") for r in _names(raw.get("test", []), "data.test"))
    if not valid:
        raise ConfigError("data.valid: name at least one validation set: a corpus of its own, a preset's split, "
                          "or a part carved out of a training corpus (held_out: {valid: 1000})")
    return DataSources(corpora, train, valid, test)


def _names(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of names")
    return value


def _check_ref(ref: str, by_name: dict[str, CorpusSpec], train: tuple[str, ...], where: str) -> str:
    name, _, part = ref.partition(":")
    corpus = by_name.get(name)
    if corpus is None:
        raise ConfigError(f"{where}: no corpus named {name!r} (corpora: {sorted(by_name)})")
    if corpus.preset and not part:
        raise ConfigError(f"{where}: name a split of preset {name!r}, e.g. {name}:{corpus.parts[-1]}")
    part = part or WHOLE
    if part not in corpus.parts or part == "train":
        raise ConfigError(f"{where}: corpus {name!r} has no part {part!r} (parts: {list(corpus.parts)})")
    if part == WHOLE and name in train:
        raise ConfigError(f"{where}: {name!r} is used whole for evaluation and also for training; "
                          f"carve a held_out part instead")
    return f"{name}:{part}"


_KNOWN_KEYS = {"name", "preset", "format", "path", "paths", "columns", "header", "url", "sha256", "weight",
               "held_out", "seed", "licence", "domain", "description"}


def _parse_corpus(entry: object, index: int, source: str, target: str) -> CorpusSpec:
    where = f"data.corpora[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(entry) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    if not isinstance(entry.get("name"), str) or not entry["name"] or ":" in entry["name"]:
        raise ConfigError(f"{where}: a name (without ':') is required")
    where = f"data.corpora[{entry['name']}]"
    values = dict(entry)
    for key in ("paths", "columns", "held_out"):
        if not isinstance(values.get(key, {}), dict):
            raise ConfigError(f"{where}.{key}: expected a mapping")
    spec = CorpusSpec(**values)
    if spec.preset is not None:
        if spec.preset not in PRESET_SPLITS:
            raise ConfigError(f"{where}: unknown preset {spec.preset!r} (presets: {sorted(PRESET_SPLITS)})")
        for lang in (source, target):
            if lang not in PRESET_LANGUAGES[spec.preset]:
                raise ConfigError(f"{where}: preset {spec.preset} has no {lang!r} "
                                  f"(languages: {list(PRESET_LANGUAGES[spec.preset])})")
        if spec.held_out:
            raise ConfigError(f"{where}: a preset has its own splits; held_out is for file corpora")
        return spec
    if spec.format not in FORMATS:
        raise ConfigError(f"{where}.format: {spec.format!r} is not one of {list(FORMATS)}")
    for lang in (*spec.paths, *spec.columns):
        check_language(lang, f"{where}: language")
    if spec.format == "moses":
        missing = [lang for lang in (source, target) if lang not in spec.paths]
        if missing:
            raise ConfigError(f"{where}.paths: no file for {missing} (the config translates {source}->{target}; "
                              f"paths has {sorted(spec.paths)})")
    else:
        if not spec.path:
            raise ConfigError(f"{where}.path: required for format {spec.format}")
        if spec.format in ("tsv", "csv"):
            missing = [lang for lang in (source, target) if lang not in spec.columns]
            if missing:
                raise ConfigError(f"{where}.columns: no column for {missing} (the config translates "
                                  f"{source}->{target}; columns has {sorted(spec.columns)})")
    if not isinstance(spec.weight, (int, float)) or spec.weight <= 0:
        raise ConfigError(f"{where}.weight: expected a positive number, got {spec.weight!r}")
    for part, size in spec.held_out.items():
        if part in (WHOLE, "train") or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"{where}.held_out: {part!r}: expected a name other than all/train "
                              f"and a positive number of pairs")
    return spec
