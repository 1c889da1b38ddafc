"""Language identification for ``source: auto``, restricted to the languages the service can translate from.

Uses py3langid (langid.py's naive Bayes model over byte n-grams; the model ships inside the PyPI package
as a NumPy archive, loaded without pickle and never downloaded).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

from py3langid.langid import MODEL_FILE, LanguageIdentifier


@dataclass(frozen=True)
class Detection:
    language: str
    confidence: float  # probability among the candidate languages, 0..1


@lru_cache(maxsize=1)
def _model() -> tuple:
    """The packaged model, loaded once per process (about 0.5 s)."""
    full = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return full.nb_ptc, full.nb_pc, full.nb_classes, full.tk_nextmove, full.tk_output, full.tk_row


def known_languages() -> frozenset[str]:
    """Every language code the packaged model can identify."""
    return frozenset(_model()[2])


class LanguageDetector:
    """Ranks candidate languages for a text; the detector's languages must be known to the model.

    One identifier per candidate subset, built on first use: langid's restriction is a copy of the model's
    columns, and its probabilities are normalized over the candidates only.
    """

    def __init__(self, languages: list[str]) -> None:
        unknown = sorted(set(languages) - set(_model()[2]))
        if unknown:
            raise ValueError(f"language identification does not know {unknown}")
        self.languages = sorted(set(languages))
        self._lock = threading.Lock()
        self._subsets: dict[tuple[str, ...], LanguageIdentifier] = {}

    def rank(self, text: str, candidates: list[str] | None = None) -> list[Detection]:
        """All candidates (default: every language of the detector) by probability, best first."""
        subset = tuple(sorted(set(candidates or self.languages) & set(self.languages)))
        if not subset:
            raise ValueError(f"no candidate language among {self.languages}")
        if len(subset) == 1:
            return [Detection(subset[0], 1.0)]
        identifier = self._identifier_for(subset)
        return [Detection(language, float(p)) for language, p in identifier.rank(text)]

    def detect(self, text: str, candidates: list[str] | None = None) -> Detection:
        return self.rank(text, candidates)[0]

    def _identifier_for(self, subset: tuple[str, ...]) -> LanguageIdentifier:
        with self._lock:
            if subset not in self._subsets:
                ptc, pc, classes, nextmove, output, row = _model()
                identifier = LanguageIdentifier(ptc, pc, classes, nextmove, output, norm_probs=True, tk_row=row)
                identifier.set_languages(list(subset))
                self._subsets[subset] = identifier
            return self._subsets[subset]
