"""Reranking a source's n-best translations with the model of the reverse direction.

A forward model's beam search ranks candidates by log P(candidate | source) alone, which favours fluent outputs
that drop or distort content. The reverse model (en -> de for a de -> en model) asks the opposite question: how
likely is the source given the candidate? A candidate that kept the source's content explains it well. The
reranked best maximizes

    score + weight * log P(source | candidate) / (source pieces + 1)

where ``score`` is the search's length-normalized log-probability and the weight is chosen on validation data
(``training.rerank``). This is bidirectional (or "noisy channel"-style) n-best rescoring; it costs one
teacher-forced pass of the reverse model over every candidate (beam 5: about half the sentences/s of plain beam
search, docs/service.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from inference.card import ModelCard, ModelCardError
from inference.onnx_model import OnnxSeq2Seq
from inference.search import StepModel, pad_batch

SCORING_BATCH = 64  # candidate rows per reverse-model pass


def forced_log_probs(model: StepModel, inputs: list[list[int]], outputs: list[list[int]]) -> np.ndarray:
    """Teacher-forced log P(output | input) of each pair: inputs end with </s>, outputs too (it is scored).

    -> [N] float64, the sum over each output's tokens.
    """
    ids, lengths = pad_batch(inputs)
    encoded = model.encode(ids, lengths)
    rows, steps = len(outputs), max(len(o) for o in outputs)
    gold = np.zeros((rows, steps), dtype=np.int64)  # [N, T]
    scored = np.zeros((rows, steps), dtype=bool)
    for row, output in enumerate(outputs):
        gold[row, : len(output)] = output
        scored[row, : len(output)] = True
    prev = np.full(rows, model.bos_id, dtype=np.int64)
    state, total = encoded.state, np.zeros(rows)
    for step in range(steps):
        log_probs, state, _ = model.step(prev, state, encoded)  # [N, V]
        total += np.where(scored[:, step], log_probs[np.arange(rows), gold[:, step]], 0.0)
        prev = gold[:, step]
    return total


@dataclass(frozen=True)
class Reranker:
    """The reverse direction's model and tokenizer, and the weight of its score."""

    model: StepModel
    tokenizer: spm.SentencePieceProcessor
    weight: float
    max_tokens: int = 250

    def reverse_scores(self, sources: list[str], candidates: list[list[str]]) -> list[np.ndarray]:
        """log P(source | candidate) per source piece (+1 for </s>), for every candidate of every source.

        sources: N texts; candidates: N lists of candidate texts -> N arrays [len(candidates[i])].
        """
        eos = self.model.eos_id
        pairs = [(self._encode(candidate) + [eos], self._encode(source) + [eos])
                 for source, texts in zip(sources, candidates) for candidate in texts]
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))  # similar lengths share a batch
        flat = np.zeros(len(pairs))
        for start in range(0, len(order), SCORING_BATCH):
            chunk = order[start : start + SCORING_BATCH]
            scores = forced_log_probs(self.model, [pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk])
            flat[chunk] = scores / np.array([len(pairs[i][1]) for i in chunk])
        bounds = np.cumsum([0] + [len(texts) for texts in candidates])
        return [flat[bounds[i] : bounds[i + 1]] for i in range(len(sources))]

    def rerank(self, sources: list[str], nbests: list[list]) -> list[list]:
        """Each source's n-best (``Translation``s, or any objects with ``text``, ``score`` and ``reverse_log_prob``)
        reordered by the combined score, best first, each candidate's reverse score recorded in its
        ``reverse_log_prob``; a list of one is left as it is."""
        todo = [i for i, nbest in enumerate(nbests) if len(nbest) > 1]
        if not todo:
            return nbests
        reverse = self.reverse_scores([sources[i] for i in todo], [[t.text for t in nbests[i]] for i in todo])
        reranked = list(nbests)
        for i, scores in zip(todo, reverse):
            for candidate, value in zip(nbests[i], scores):
                candidate.reverse_log_prob = float(value)
            combined = np.array([t.score for t in nbests[i]]) + self.weight * scores
            reranked[i] = [nbests[i][k] for k in np.argsort(-combined, kind="stable")]
        return reranked

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)[: self.max_tokens - 1]


def reverse_model(card: ModelCard, reverse_dir: Path, threads: int = 0) -> OnnxSeq2Seq:
    """The reverse direction's model; a ModelCardError when ``reverse_dir`` holds another direction."""
    reverse = OnnxSeq2Seq(reverse_dir, threads=threads)
    if (reverse.card.source_language, reverse.card.target_language) != (card.target_language, card.source_language):
        raise ModelCardError(f"{reverse_dir} translates {reverse.card.source_language} -> "
                             f"{reverse.card.target_language}, not {card.target_language} -> {card.source_language}")
    return reverse


def reranker_for(card: ModelCard, model_dir: Path, threads: int = 0) -> Reranker | None:
    """The reranker the service would give this model (the reverse model from the directory beside it), or None
    where its card asks for none."""
    wanted = card.decoding_defaults.rerank
    if wanted is None:
        return None
    reverse = reverse_model(card, model_dir.parent / wanted.model, threads)
    return Reranker(reverse, reverse.tokenizer, wanted.weight)
