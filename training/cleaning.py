"""One cleaning stage for every corpus format: normalize, then filter with counts and examples per rule.

Normalization: HTML-entity unescape, Unicode NFC, zero-width characters dropped, all whitespace (tabs,
NBSP, line separators) collapsed. Filters, in order: empty, degenerate (no letter or digit on a side),
too long, length ratio, language identification (optional, both sides), exact duplicate pair.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from training.corpus_readers import RawPair

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_WHITESPACE = re.compile(r"\s+")
_HAS_WORD = re.compile(r"\w")

RULES = ("empty", "degenerate", "too_long", "length_ratio", "language_id", "duplicate")
EXAMPLES_PER_RULE = 3


def normalize(text: str) -> str:
    """HTML-unescape, NFC-normalize, drop zero-width characters and collapse all whitespace (tabs, NBSP)."""
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    text = _ZERO_WIDTH.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class CleaningRules:
    max_words: int = 80
    max_length_ratio: float = 3.0  # applied when the longer side has more than 5 words
    deduplicate: bool = True
    language_id: bool = False  # drop pairs whose source or target is identified as another language
    language_id_min_chars: int = 20  # shorter sides are not judged (identification is unreliable on them)
    language_id_min_confidence: float = 0.9  # drop only when another language wins with this probability


@dataclass
class CleaningReport:
    """Counts per rule (every rule present, 0 when it dropped nothing) and a few rejected examples."""

    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=lambda: Counter({rule: 0 for rule in RULES}))
    examples: dict[str, list[dict]] = field(default_factory=dict)

    def reject(self, rule: str, pair: RawPair) -> None:
        self.dropped[rule] += 1
        examples = self.examples.setdefault(rule, [])
        if len(examples) < EXAMPLES_PER_RULE:
            examples.append({"at": pair.location, "source": pair.source[:200], "target": pair.target[:200]})

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped), "examples": self.examples}


class LanguageFilter:
    """Is a sentence in the language it claims to be? (py3langid among every language the service names)."""

    def __init__(self, rules: CleaningRules) -> None:
        from inference.language_id import LanguageDetector, known_languages
        from inference.languages import NAMES

        self.rules = rules
        self.detector = LanguageDetector(sorted(set(NAMES) & known_languages()))

    def is_other_language(self, text: str, expected: str) -> bool:
        if len(text) < self.rules.language_id_min_chars or expected not in self.detector.languages:
            return False
        best = self.detector.detect(text)
        return best.language != expected and best.confidence >= self.rules.language_id_min_confidence


def clean(pairs: Iterable[RawPair], source_lang: str, target_lang: str,
          rules: CleaningRules = CleaningRules()) -> tuple[list[tuple[str, str]], CleaningReport]:
    """Normalized pairs that pass every rule, and the report of what was dropped and why."""
    report = CleaningReport()
    language_filter = LanguageFilter(rules) if rules.language_id else None
    seen: set[tuple[str, str]] = set()
    kept: list[tuple[str, str]] = []
    for raw in pairs:
        report.read += 1
        src, tgt = normalize(raw.source), normalize(raw.target)
        pair = RawPair(raw.location, src, tgt)
        rule = _failed_rule(src, tgt, rules)
        if rule is None and language_filter is not None and (
                language_filter.is_other_language(src, source_lang)
                or language_filter.is_other_language(tgt, target_lang)):
            rule = "language_id"
        if rule is None and rules.deduplicate:
            if (src, tgt) in seen:
                rule = "duplicate"
            seen.add((src, tgt))
        if rule is not None:
            report.reject(rule, pair if rule != "empty" else raw)
            continue
        kept.append((src, tgt))
    report.kept = len(kept)
    return kept, report


def _failed_rule(src: str, tgt: str, rules: CleaningRules) -> str | None:
    if not src or not tgt:
        return "empty"
    if not _HAS_WORD.search(src) or not _HAS_WORD.search(tgt):
        return "degenerate"  # e.g. the "@@" placeholders in Multi30k's train.de
    n_src, n_tgt = len(src.split()), len(tgt.split())
    if max(n_src, n_tgt) > rules.max_words:
        return "too_long"
    if max(n_src, n_tgt) > rules.max_length_ratio * min(n_src, n_tgt) and max(n_src, n_tgt) > 5:
        return "length_ratio"
    return None
