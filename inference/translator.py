"""Sentences in, translations out: SentencePiece tokenization around the shared search.

Used by the service's batcher and by the training pipeline's evaluation alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import sentencepiece as spm

from inference.confidence import ConfidenceModel, detector_for, nbest_agreement, signals, source_language_log_prob
from inference.rerank import Reranker
from inference.search import Hypothesis, SearchOptions, StepModel, search


@dataclass
class Translation:
    text: str
    score: float  # length-normalized log-probability
    source_tokens: list[str]
    target_tokens: list[str]
    attention: np.ndarray | None  # [len(target_tokens), len(source_tokens)]
    token_log_probs: np.ndarray | None = None  # [len(target_tokens)]: log-prob of each target token
    signals: np.ndarray | None = None  # [len(SIGNALS)] or, reranked, [len(RERANKED_SIGNALS)]: quality signals
    reverse_log_prob: float | None = None  # log P(source | text) per source piece, when the reverse model reranked
    confidence: float | None = None  # calibrated probability of a good translation, when the model has a calibration


class SentenceTranslator:
    """Tokenizes, decodes in length-sorted chunks, and detokenizes.

    With ``source_language`` set, each translation also carries its quality ``signals``; with a ``confidence``
    model as well, their calibrated ``confidence``. With a ``reranker``, the search keeps its whole beam as the
    n-best and the reverse model reorders it; a reranked n-best gets the ``reranked_confidence`` model, over the
    signals reranking adds.
    """

    def __init__(self, model: StepModel, tokenizer: spm.SentencePieceProcessor, max_source_tokens: int = 250,
                 source_language: str | None = None, confidence: ConfidenceModel | None = None,
                 reranker: Reranker | None = None, reranked_confidence: ConfidenceModel | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_source_tokens = max_source_tokens
        self.source_language = source_language
        self.confidence = confidence
        self.reranker = reranker
        self.reranked_confidence = reranked_confidence
        self._detector = detector_for(source_language) if source_language else None

    def search_options(self, options: SearchOptions) -> SearchOptions:
        """The options the search runs with: with a reranker, every beam's best becomes a candidate."""
        return replace(options, n_best=options.beam_size) if self.reranker is not None else options

    def encode(self, sentence: str) -> list[int]:
        """Source ids with </s> appended, truncated to the model's maximum source length."""
        ids = self.tokenizer.encode(sentence)[: self.max_source_tokens - 1]
        return ids + [self.model.eos_id]

    def translate_ids(self, sources: list[list[int]], options: SearchOptions) -> list[list[Translation]]:
        """One decoder batch of pre-tokenized sources -> ``options.n_best`` translations per source."""
        hypotheses = search(self.model, sources, self.search_options(options))
        return [nbest[: options.n_best] for nbest in self.finish_many(sources, hypotheses)]

    def finish_many(self, sources: list[list[int]], hypotheses: list[list[Hypothesis]], assess: bool = True
                    ) -> list[list[Translation]]:
        """Each source's n-best hypotheses (from the search) -> its translations, reranked when there is a
        reranker, with their signals and confidence when ``assess`` (a language-identification pass per source)."""
        results = [self.finish(source, nbest, assess=False) for source, nbest in zip(sources, hypotheses)]
        if self.reranker is not None:
            results = self.reranker.rerank([self.tokenizer.decode(self._without_eos(s)) for s in sources], results)
        if assess:
            for source, translations in zip(sources, results):
                self.assess(source, translations)
        return results

    def finish(self, source: list[int], hypotheses: list[Hypothesis], assess: bool = True) -> list[Translation]:
        """One source's n-best hypotheses -> its translations in the search's order (``finish_many`` reranks)."""
        source_pieces = [self.tokenizer.id_to_piece(i) for i in source]  # once per source, not per hypothesis
        translations = [self._translation(source_pieces, hyp) for hyp in hypotheses]
        if assess:
            self.assess(source, translations)
        return translations

    def _without_eos(self, source: list[int]) -> list[int]:
        return source[:-1] if source and source[-1] == self.model.eos_id else source

    def assess(self, source: list[int], translations: list[Translation]) -> None:
        """Fill in the signals (and confidence) of one source's n-best translations; nothing without a source
        language. A reranked n-best of two or more also gets the reranking signals and the model over them."""
        if self._detector is None:
            return
        ids = self._without_eos(source)
        text = self.tokenizer.decode(ids)
        language = source_language_log_prob(text, self.source_language, self._detector)
        plain = np.stack([signals(text, ids, t.token_log_probs, self.tokenizer.unk_id(), language)
                          for t in translations])  # [n-best, len(SIGNALS)]
        reranked = len(translations) > 1 and all(t.reverse_log_prob is not None for t in translations)
        features = np.column_stack([plain, [t.reverse_log_prob for t in translations],
                                    nbest_agreement([t.text for t in translations])]) if reranked else plain
        if reranked and self.reranked_confidence is not None:  # features [n-best, len(RERANKED_SIGNALS)]
            confidences = self.reranked_confidence.probability(features)
        elif self.confidence is not None:
            confidences = self.confidence.probability(plain)
        else:
            confidences = [None] * len(translations)
        for translation, row, confidence in zip(translations, features, confidences):
            translation.signals = row
            translation.confidence = None if confidence is None else float(confidence)

    def translate(self, sentences: list[str], options: SearchOptions, batch_size: int = 64) -> list[list[Translation]]:
        """Any number of sentences; sorted by length into batches to cut padding, results in input order."""
        encoded = [self.encode(s) for s in sentences]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[list[Translation]] = [[] for _ in sentences]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for index, translations in zip(chunk, self.translate_ids([encoded[i] for i in chunk], options)):
                results[index] = translations
        return results

    def _translation(self, source_pieces: list[str], hypothesis: Hypothesis) -> Translation:
        return Translation(
            text=self.tokenizer.decode(hypothesis.tokens),
            score=hypothesis.score,
            source_tokens=source_pieces,
            target_tokens=[self.tokenizer.id_to_piece(i) for i in hypothesis.tokens]
            + (["</s>"] if hypothesis.complete else []),
            attention=hypothesis.attention,
            token_log_probs=hypothesis.token_log_probs,
        )
