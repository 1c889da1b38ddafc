"""Translation confidence: a calibrated probability that a sentence's translation is good.

"Good" means sentence chrF >= ``GOOD_CHRF`` against a human reference. The probability comes from a logistic
model over signals the search and the tokenizer already produce, fitted per model on held-out data by
``training.calibrate`` and stored in ``model.json`` under ``confidence``:

- ``mean_log_prob`` / ``min_log_prob``: the average and the worst log-probability of the output's tokens;
- ``length_ratio``: log of output pieces over source pieces (dropped or invented content);
- ``pieces_per_char`` and ``unknown_rate``: how hard the tokenizer had to chop the source (random strings,
  other scripts, other languages split into many short pieces and unknown characters);
- ``source_language_log_prob``: log-probability that the source is in the model's source language, from
  language identification over ``IDENTIFIED_LANGUAGES`` (text in another language than the model knows).

Where the reverse direction's model reranks the n-best (``inference.rerank``), two more signals come free with
it, and a second logistic model over ``RERANKED_SIGNALS`` (the card's ``confidence.model_reranked``) uses them:

- ``reverse_log_prob``: log P(source | translation) per source piece from the reverse model (does the
  translation still carry the source's content?);
- ``nbest_agreement``: mean sentence chrF of the translation against the other candidates of its n-best (a
  beam that agrees with itself is surer than one split between different translations).

A sentence without them (plain decoding, or a beam of one) gets the model over ``SIGNALS``.

Everything is computed from the source ids and the hypothesis, so a sentence's confidence does not depend on
the rest of its batch or on whether it came from a cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sacrebleu.metrics import CHRF

from inference.language_id import LanguageDetector

GOOD_CHRF = 50.0
SIGNALS = ("mean_log_prob", "min_log_prob", "length_ratio", "pieces_per_char", "unknown_rate",
           "source_language_log_prob")
RERANKED_SIGNALS = SIGNALS + ("reverse_log_prob", "nbest_agreement")
# Widely used languages in Latin and other scripts that language identification weighs the source against.
IDENTIFIED_LANGUAGES = ("ar", "cs", "da", "de", "el", "en", "es", "fi", "fr", "hu", "it", "ja", "nl", "pl", "pt",
                        "ro", "ru", "sv", "tr", "uk", "zh")
_PROBABILITY_FLOOR = 1e-6


def source_language_log_prob(text: str, language: str, detector: LanguageDetector) -> float:
    """log P(text is in ``language``) among ``IDENTIFIED_LANGUAGES`` (plus ``language``), floored at log 1e-6."""
    probability = next((d.confidence for d in detector.rank(text) if d.language == language), 0.0)
    return math.log(max(probability, _PROBABILITY_FLOOR))


def detector_for(language: str) -> LanguageDetector:
    return LanguageDetector(sorted(set(IDENTIFIED_LANGUAGES) | {language}))


def signals(source_text: str, source_ids: list[int], token_log_probs: np.ndarray, unk_id: int,
            language_log_prob: float) -> np.ndarray:
    """One sentence's signals, in ``SIGNALS`` order -> [len(SIGNALS)] float64.

    source_ids: the encoder input without </s>; token_log_probs [T]: log-prob of each output token, </s> included.
    """
    pieces = max(len(source_ids), 1)
    return np.array([
        float(np.mean(token_log_probs)),
        float(np.min(token_log_probs)),
        math.log(len(token_log_probs) / (pieces + 1)),
        len(source_ids) / max(len(source_text), 1),
        sum(i == unk_id for i in source_ids) / pieces,
        language_log_prob,
    ])


def nbest_agreement(texts: list[str]) -> np.ndarray:
    """Mean sentence chrF of each of an n-best's texts against the others: N >= 2 texts -> [N] float64."""
    chrf = CHRF()
    return np.array([np.mean([chrf.sentence_score(text, [other]).score for k, other in enumerate(texts) if k != i])
                     for i, text in enumerate(texts)])


@dataclass(frozen=True)
class ConfidenceModel:
    """Standardization and logistic weights over ``signals``: probability = sigmoid(w . (x - mean) / scale + b)."""

    signals: tuple[str, ...]
    mean: np.ndarray  # [F]
    scale: np.ndarray  # [F]
    weights: np.ndarray  # [F]
    bias: float
    good_chrf: float = GOOD_CHRF

    @classmethod
    def from_card(cls, entry: dict, key: str = "model") -> ConfidenceModel:
        """From ``model.json``'s ``confidence`` section: ``model`` (over ``SIGNALS``) or ``model_reranked`` (over
        ``RERANKED_SIGNALS``); a section this code cannot use is a ValueError."""
        wanted = RERANKED_SIGNALS if key == "model_reranked" else SIGNALS
        model = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(model, dict) or tuple(model.get("signals", ())) != wanted:
            raise ValueError(f"confidence.{key} must list the signals {list(wanted)}")
        arrays = [np.asarray(model[name], dtype=np.float64) for name in ("mean", "scale", "weights")]
        if any(a.shape != (len(wanted),) or not np.all(np.isfinite(a)) for a in arrays) or np.any(arrays[1] <= 0):
            raise ValueError(f"confidence.{key} needs finite mean, scale > 0 and weights of {len(wanted)} values")
        return cls(wanted, *arrays, float(model["bias"]), float(entry.get("good_chrf", GOOD_CHRF)))

    @classmethod
    def pair_from_card(cls, entry: dict | None) -> tuple[ConfidenceModel | None, ConfidenceModel | None]:
        """The card's confidence models: (over ``SIGNALS``, over ``RERANKED_SIGNALS`` where it has one)."""
        if entry is None:
            return None, None
        return cls.from_card(entry), cls.from_card(entry, "model_reranked") if "model_reranked" in entry else None

    def to_card(self) -> dict:
        return {"signals": list(self.signals), "mean": self.mean.round(6).tolist(),
                "scale": self.scale.round(6).tolist(), "weights": self.weights.round(6).tolist(),
                "bias": round(self.bias, 6)}

    def probability(self, features: np.ndarray) -> np.ndarray:
        """features [N, F] -> probabilities [N] that each translation reaches ``good_chrf``."""
        logits = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
