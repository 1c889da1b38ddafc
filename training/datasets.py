"""Assemble a run's training, validation and test sets from the corpora its config names.

Every corpus goes through the same path: read (any format) -> clean (one stage, counted) -> carve held-out
parts (seeded, grouped) -> weight (oversample). The ``report`` records every count, and is written into
the run directory, printed by ``training.prepare`` and copied into the model card.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.cleaning import CleaningRules, clean, normalize
from training.corpus_config import WHOLE, CorpusSpec, DataSources
from training.corpus_readers import CorpusError, RawPair, open_bytes, read_delimited, read_jsonl, read_moses, read_tmx
from training.data import LICENCE_NOTE, MULTI30K_COMMIT, fetch_multi30k
from training.splits import carve

log = logging.getLogger(__name__)

Pair = tuple[str, str]
PRESET_CARDS = {"multi30k": {"description": f"Multi30k task 1 (multi30k/dataset@{MULTI30K_COMMIT})",
                             "domain": "image captions", "licence": LICENCE_NOTE}}


@dataclass
class PreparedData:
    train: list[Pair]  # cleaned, held-out parts removed, oversampled by weight, in corpus order
    valid: dict[str, list[Pair]]  # "corpus:part" -> pairs
    test: dict[str, list[Pair]]
    report: dict = field(default_factory=dict)

    @property
    def valid_pairs(self) -> list[Pair]:
        return [pair for pairs in self.valid.values() for pair in pairs]

    def fingerprints(self) -> dict[str, str]:
        """SHA-256 of every validation and test set's pairs: proof that a set rebuilt from the recipe later
        (by training.evaluate) is the very set held out in training."""
        return {name: hashlib.sha256("\n".join(f"{s}\t{t}" for s, t in pairs).encode()).hexdigest()
                for name, pairs in {**self.valid, **self.test}.items()}


def fetch_file(spec: CorpusSpec, path: Path) -> None:
    """Download ``spec.url`` to ``path`` (atomically) when the file is missing."""
    if path.exists() or not spec.url:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as response:
            payload = response.read()
    except OSError as error:
        raise CorpusError(f"{path}: missing, and cannot download {spec.url} ({error}); put a copy there") from error
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(payload)
    partial.replace(path)


def verify(spec: CorpusSpec, path: Path) -> None:
    if spec.sha256:
        digest = hashlib.sha256(open_bytes(path)).hexdigest()
        if digest != spec.sha256:
            raise CorpusError(f"{path}: SHA-256 of the decompressed file is {digest}, the config expects {spec.sha256}")


def read_corpus(spec: CorpusSpec, source: str, target: str, part: str = WHOLE,
                multi30k_dir: Path | None = None, mirror: Path | None = None) -> Iterator[RawPair]:
    """Raw pairs of one corpus (for a preset: of one of its splits), source and target as the run needs."""
    if spec.preset == "multi30k":
        cache = multi30k_dir or Path("data/multi30k")
        fetch_multi30k(cache, mirror)
        return read_moses(cache / f"{part}.{source}.txt", cache / f"{part}.{target}.txt")
    if spec.format == "moses":
        return read_moses(*(spec.resolved(spec.paths[lang]) for lang in (source, target)))
    path = spec.resolved(spec.path or "")
    fetch_file(spec, path)
    verify(spec, path)
    if spec.format in ("tsv", "csv"):
        return read_delimited(path, spec.columns[source], spec.columns[target],
                              "\t" if spec.format == "tsv" else ",", spec.header)
    if spec.format == "jsonl":
        return read_jsonl(path, str(spec.columns.get(source, source)), str(spec.columns.get(target, target)))
    return read_tmx(path, source, target)


LENGTH_BUCKETS = ((1, 5), (6, 10), (11, 20), (21, 40), (41, 80), (81, 10**9))


def describe(pairs: list[Pair]) -> dict:
    """Length histograms (words per side) and how many pairs share their source with another pair."""
    def histogram(lengths: list[int]) -> dict[str, int]:
        return {(f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}"): sum(lo <= n <= hi for n in lengths)
                for lo, hi in LENGTH_BUCKETS}

    sources = Counter(src for src, _ in pairs)
    return {"source_words": histogram([len(s.split()) for s, _ in pairs]),
            "target_words": histogram([len(t.split()) for _, t in pairs]),
            "repeated_source_pairs": sum(n for n in sources.values() if n > 1)}


def oversample(pairs: list[Pair], weight: float, seed: int) -> list[Pair]:
    """``weight`` 2 -> every pair twice; 1.5 -> every pair once plus a seeded half again; 0.5 -> a seeded half."""
    whole, fraction = int(weight), weight - int(weight)
    extra = random.Random(seed).sample(pairs, round(fraction * len(pairs))) if fraction else []
    return pairs * whole + extra


def prepare_data(sources: DataSources, source: str, target: str, rules: CleaningRules,
                 multi30k_dir: Path | None = None, mirror: Path | None = None) -> PreparedData:
    """Read, clean, split and weight every corpus; raise CorpusError before training on any bad input."""
    needed = {ref.split(":")[0] for ref in (*sources.valid, *sources.test)} | set(sources.train)
    parts: dict[str, list[Pair]] = {}
    report: dict = {"corpora": {}, "splits": {}}
    for spec in sources.corpora:
        if spec.name not in needed:
            continue
        preset = PRESET_CARDS.get(spec.preset or "", {})
        entry: dict = {"format": spec.preset or spec.format, "weight": spec.weight,
                       "description": spec.description or preset.get("description", ""),
                       "licence": spec.licence or preset.get("licence", ""),
                       "domain": spec.domain or preset.get("domain", "")}
        if spec.preset:
            for split in spec.parts:
                raw = read_corpus(spec, source, target, split, multi30k_dir, mirror)
                if split == "train":
                    parts[f"{spec.name}:train"], cleaning = clean(raw, source, target, rules)
                    entry["cleaning"] = cleaning.to_dict()
                    entry["kept_pairs"] = describe(parts[f"{spec.name}:train"])
                else:  # evaluation splits are only normalized: every reference line is scored
                    parts[f"{spec.name}:{split}"] = [(normalize(p.source), normalize(p.target)) for p in raw]
        else:
            pairs, cleaning = clean(read_corpus(spec, source, target), source, target, rules)
            entry["cleaning"] = cleaning.to_dict()
            entry["kept_pairs"] = describe(pairs)
            if spec.name in sources.train or spec.held_out:
                carved = carve(pairs, spec.held_out, spec.seed)
                for name, carved_pairs in carved.items():
                    parts[f"{spec.name}:{name}"] = carved_pairs
                if spec.held_out:
                    entry["held_out_recipe"] = {"sizes": spec.held_out, "seed": spec.seed,
                                                "grouping": "pairs sharing a source or target sentence "
                                                            "(case-insensitive) stay together"}
            parts[f"{spec.name}:{WHOLE}"] = pairs
        if spec.name in sources.train and not parts[f"{spec.name}:train"]:
            raise CorpusError(f"corpus {spec.name!r}: no training pair left after cleaning "
                              f"({entry['cleaning']['dropped']}) and holding out {spec.held_out or 'nothing'}")
        report["corpora"][spec.name] = entry
        if "cleaning" in entry:
            log.info("corpus %s: read %d, kept %d, dropped %s", spec.name, entry["cleaning"]["read"],
                     entry["cleaning"]["kept"], {k: v for k, v in entry["cleaning"]["dropped"].items() if v} or "none")

    carved_refs = [ref for ref in (*sources.valid, *sources.test)
                   if ref.split(":")[1] in sources.corpus(ref.split(":")[0]).held_out]
    held_out_sentences = {text.casefold() for ref in carved_refs for pair in parts[ref] for text in pair}
    train: list[Pair] = []
    for name in sources.train:
        spec = sources.corpus(name)
        pairs = parts[f"{name}:train"]
        if held_out_sentences:  # a carved-out sentence must not come back through another corpus
            kept = [p for p in pairs if p[0].casefold() not in held_out_sentences
                    and p[1].casefold() not in held_out_sentences]
            report["corpora"][name]["held_out_overlap_dropped"] = len(pairs) - len(kept)
            pairs = kept
        weighted = oversample(pairs, spec.weight, spec.seed)
        report["corpora"][name].update(train_pairs=len(pairs), train_pairs_weighted=len(weighted))
        train.extend(weighted)
    valid = {ref: parts[ref] for ref in sources.valid}
    test = {ref: parts[ref] for ref in sources.test}
    report["splits"] = {"train": len(train), **{f"valid {k}": len(v) for k, v in valid.items()},
                        **{f"test {k}": len(v) for k, v in test.items()}}
    for ref, pairs in (*valid.items(), *test.items()):
        if not pairs:
            raise CorpusError(f"{ref}: empty evaluation set")
    log.info("data %s-%s: %s", source, target, report["splits"])
    return PreparedData(train, valid, test, report)
