"""Batched greedy and beam search over any encoder/decoder-step model (ONNX at serving, PyTorch in training).

This is the only decoding code in the project: the service and the training pipeline's evaluation both
call it, so reported scores describe what users get. Everything here is numpy; a model only has to
implement ``StepModel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from inference.slots import ArraySlots, SlotTensors
from inference.step_model import Encoded, StepModel


@dataclass
class Hypothesis:
    tokens: list[int]  # without <s> and </s>
    score: float  # length-normalized log-probability
    log_prob: float  # total log-probability, </s> included
    complete: bool = True  # ended with </s> (False: stopped at the length limit)
    attention: np.ndarray | None = None  # [steps, S_real]: one row per generated token (</s> included when complete)
    token_log_probs: np.ndarray | None = None  # [steps] float64: log-prob of each generated token (</s> included)


@dataclass(frozen=True)
class SearchOptions:
    beam_size: int = 1
    n_best: int = 1
    length_penalty: float = 1.0  # score = log_prob / length ** length_penalty
    max_length_ratio: float = 2.0
    max_length_offset: int = 10
    max_length_cap: int = 256
    return_attention: bool = False

    def __post_init__(self) -> None:
        if self.beam_size < 1 or not 1 <= self.n_best <= self.beam_size:
            raise ValueError("need beam_size >= 1 and 1 <= n_best <= beam_size")

    def max_length(self, source_length: int) -> int:
        return min(self.max_length_cap, int(math.ceil(self.max_length_ratio * source_length)) + self.max_length_offset)


def _normalized(log_prob: float, length: int, penalty: float) -> float:
    return log_prob / (max(length, 1) ** penalty)


def pad_batch(sequences: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> ids [B, S_max] int64 (right-padded), lengths [B] int64."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    ids = np.full((len(sequences), int(lengths.max())), pad_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
    return ids, lengths


@dataclass(eq=False)
class _Sentence:
    """One source sentence being decoded: its options, limits and the hypotheses it has finished."""

    tag: object
    options: SearchOptions
    source_length: int
    max_length: int
    finished: list[Hypothesis] = field(default_factory=list)

    def ranked(self) -> list[Hypothesis]:
        return sorted(self.finished, key=lambda h: h.score, reverse=True)[: self.options.n_best]


class StepSearch:
    """A beam search that sentences join and leave between decoder calls.

    ``admit`` encodes new sentences (one encoder call) and gives their beams decoder rows; ``step`` advances every
    active row by one decoder call and returns the sentences that finished; ``withdraw`` drops sentences
    mid-decode. Rows of any number of sentences, source lengths and beam sizes share each decoder call. Sentences
    of one beam size are pruned together with array operations (no per-sentence Python loop in a step; only
    finished hypotheses are built one by one).

    A sentence's result does not depend on its companions or on when they join or leave: padding is masked,
    and each sentence keeps its own beams, options, length limit and stopping rule.

    Rows are slots that a sentence holds from admission to retirement, so the encoder output (the largest state)
    is written once per sentence and never moved while the batch changes; a beam that takes over another beam's
    hypothesis copies only the small per-row arrays. Freed slots are reused by newcomers; the slot arrays are
    compacted when less than ``COMPACT_BELOW`` of them are in use, so idle rows cost little compute.

    Slot arrays (C slots, W = source width, T = history capacity): ``tensors``, the decoder's inputs (memory
    [C, W, M], keys [C, W, K], mask [C, W], state [C, D]) as numpy arrays or, where the model offers them
    (``slot_tensors()``), as onnxruntime OrtValues on its device (``inference.slots``); in numpy: ``prev`` [C],
    ``scores`` [C] (cumulative log-prob, -inf for a dead beam), ``tokens`` [C, T], ``token_log_probs`` [C, T],
    ``attention`` [C, T, W] (kept while a sentence wants it). Per sentence, in admission order: ``beams``,
    ``steps`` taken, length ``limits``, ``finished_counts``; its slots are
    ``slots[offsets[i] : offsets[i] + beams[i]]``.
    """

    COMPACT_BELOW = 0.75

    def __init__(self, model: StepModel) -> None:
        self.model = model
        self.sentences: list[_Sentence] = []
        self.beams = np.zeros(0, np.int64)
        self.steps = np.zeros(0, np.int64)
        self.limits = np.zeros(0, np.int64)
        self.finished_counts = np.zeros(0, np.int64)
        self.source_lengths = np.zeros(0, np.int64)
        self.slots = np.zeros(0, np.int64)  # the sentences' slots, concatenated in sentence order
        self._reset_slots()

    def _reset_slots(self) -> None:
        make_tensors = getattr(self.model, "slot_tensors", None)  # a model may keep them on its device
        self.tensors: SlotTensors = make_tensors() if make_tensors else ArraySlots(self.model)
        self.prev = np.zeros(0, np.int64)
        self.scores = np.zeros(0, np.float64)
        self.tokens = np.zeros((0, 0), np.int64)
        self.token_log_probs = np.zeros((0, 0), np.float64)
        self.attention: np.ndarray | None = None
        self.free: list[int] = []

    # ---- what is active -------------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows in use (sentences x beam)."""
        return len(self.slots)

    @property
    def capacity(self) -> int:
        """Rows the decoder runs (in use or free)."""
        return len(self.scores)

    @property
    def width(self) -> int:
        """Source positions of the slots (the longest active source, or more until the next compaction)."""
        return self.tensors.width

    def __len__(self) -> int:
        return len(self.sentences)

    def padding_ratio(self) -> float:
        """Share of the decoder batch's source positions that are padding or free slots (work that is wasted)."""
        total = self.capacity * self.width
        return 1.0 - float(self.source_lengths @ self.beams) / total if total else 0.0

    def _offsets(self) -> np.ndarray:
        return np.cumsum(self.beams) - self.beams

    # ---- joining and leaving --------------------------------------------------------------------------------

    def admit(self, sources: list[list[int]], options: list[SearchOptions], tags: list[object]) -> None:
        """Encode ``sources`` (one encoder call) and give their beams slots; ``tags`` name them in ``step``."""
        if not sources:
            return
        src, lengths = pad_batch(sources)
        fresh = self.model.encode(src, lengths)
        beams = np.array([o.beam_size for o in options], dtype=np.int64)
        rows = int(beams.sum())
        extra, width = max(0, rows - len(self.free)), max(self.width, fresh.mask.shape[1])
        if extra or width > self.width:
            self._grow(extra, width, fresh)
        free = sorted(self.free)
        slots, self.free = np.array(free[:rows], dtype=np.int64), free[rows:]
        owner = np.repeat(np.arange(len(sources)), beams)  # newcomer of each new slot
        first = np.zeros(rows, dtype=bool)
        first[np.cumsum(beams) - beams] = True  # each sentence starts from one live beam, the others dead
        self.tensors.place(slots, fresh, owner)
        self.prev[slots] = self.model.bos_id
        self.scores[slots] = np.where(first, 0.0, -np.inf)
        if self.attention is None and any(o.return_attention for o in options):
            self.attention = np.zeros((self.capacity, self.tokens.shape[1], self.width), np.float32)
        newcomers = [_Sentence(tag, o, int(n), o.max_length(int(n))) for tag, o, n in zip(tags, options, lengths)]
        self.sentences.extend(newcomers)
        self.beams = np.concatenate([self.beams, beams])
        self.steps = np.concatenate([self.steps, np.zeros(len(sources), np.int64)])
        self.limits = np.concatenate([self.limits, np.array([s.max_length for s in newcomers], np.int64)])
        self.finished_counts = np.concatenate([self.finished_counts, np.zeros(len(sources), np.int64)])
        self.source_lengths = np.concatenate([self.source_lengths, lengths])
        self.slots = np.concatenate([self.slots, slots])

    def withdraw(self, tags: set[object]) -> int:
        """Drop the sentences whose tag is in ``tags`` (cancelled, deadline passed); returns how many."""
        keep = np.array([s.tag not in tags for s in self.sentences], dtype=bool)
        dropped = int((~keep).sum())
        if dropped:
            self._keep_sentences(keep)
        return dropped

    def clear(self) -> list[object]:
        """Drop everything (after a failed step); returns the tags that were active."""
        tags = [s.tag for s in self.sentences]
        self._keep_sentences(np.zeros(len(self.sentences), dtype=bool))
        return tags

    def _keep_sentences(self, keep: np.ndarray) -> None:
        """Keep the sentences where ``keep`` [N] is True; the others' slots are freed."""
        in_use = np.repeat(keep, self.beams)
        self.free.extend(self.slots[~in_use].tolist())
        self.slots = self.slots[in_use]
        self.sentences = [self.sentences[i] for i in np.flatnonzero(keep)]
        self.beams, self.steps = self.beams[keep], self.steps[keep]
        self.limits, self.finished_counts = self.limits[keep], self.finished_counts[keep]
        self.source_lengths = self.source_lengths[keep]
        if not self.sentences:
            self._reset_slots()
        elif self.attention is not None and not any(s.options.return_attention for s in self.sentences):
            self.attention = None

    # ---- one decoder step -----------------------------------------------------------------------------------

    def step(self) -> list[tuple[object, list[Hypothesis]]]:
        """Advance every active row by one token; returns (tag, n-best hypotheses, best first) of each sentence
        that finished in this step, in admission order."""
        if not self.sentences:
            return []
        if self.rows < self.COMPACT_BELOW * self.capacity:
            self._compact()
        beams, offsets, steps = self.beams, self._offsets(), self.steps + 1
        row_values, row_tokens, state, weights = self.tensors.decode(
            self.prev, 2 * int(beams.max()), want_attention=self.attention is not None)
        if weights is None:
            self.attention = None

        parent_of = np.arange(self.capacity)  # next state of each slot: the state of this slot of this step
        new_token = self.prev.copy()
        new_score = np.full(self.capacity, -np.inf)
        done = np.zeros(len(self.sentences), dtype=bool)
        events: list[tuple[int, int, int, float]] = []  # (sentence, parent slot, token, score) of finished hyps

        one_size = bool((beams == beams[0]).all())
        for beam in [int(beams[0])] if one_size else np.unique(beams).tolist():
            members = np.arange(len(beams)) if one_size else np.flatnonzero(beams == beam)  # this beam size
            slots = self.slots[offsets[members][:, None] + np.arange(beam)]  # [n, beam]
            rows = slots.reshape(-1)
            if beam == 1:  # greedy: each sentence's best token, the same rule without ranking candidates
                self._greedy_step(members, rows, row_values[rows, 0], row_tokens[rows, 0], steps, done, events,
                                  new_token, new_score)
                continue
            parent_beam, token, top_scores = _best_candidates(
                self.scores[slots], row_values[rows, : 2 * beam], row_tokens[rows, : 2 * beam], 2 * beam)
            by_sentence = np.arange(len(members))[:, None]  # fancy-index rows: cheaper than take_along_axis
            parent = slots[by_sentence, parent_beam]
            at_limit = steps[members] >= self.limits[members]
            valid = top_scores > -np.inf
            finishing = valid & ((token == self.model.eos_id) | at_limit[:, None])
            continuing = valid & ~finishing
            # A candidate counts while fewer than `beam` hypotheses have finished and fewer than `beam` continue
            # before it in rank order (the sequential rule: stop at whichever fills up first).
            finished_so_far = self.finished_counts[members]
            finished_before = finished_so_far[:, None] + np.cumsum(finishing, 1) - finishing
            continuing_before = np.cumsum(continuing, 1) - continuing
            counted = valid & (finished_before < beam) & (continuing_before < beam)
            new_finished, kept = counted & finishing, counted & continuing
            n_kept = kept.sum(1)
            self.finished_counts[members] = finished_so_far + new_finished.sum(1)
            done[members] = (self.finished_counts[members] >= beam) | at_limit | (n_kept == 0)
            for i, j in zip(*np.nonzero(new_finished)):
                events.append((int(members[i]), int(parent[i, j]), int(token[i, j]), float(top_scores[i, j])))
            # The kept candidates in rank order, padded to `beam` with dead copies of the last one.
            order = np.argsort(~kept, axis=1, kind="stable")[:, :beam]
            pad = np.arange(beam)[None, :] >= n_kept[:, None]
            order = np.where(pad, order[np.arange(len(members)), np.maximum(n_kept - 1, 0)][:, None], order)
            parent_of[slots] = parent[by_sentence, order]
            new_token[slots] = token[by_sentence, order]
            new_score[slots] = np.where(pad, -np.inf, top_scores[by_sentence, order])

        for index, parent, token, score in events:
            self._finish(self.sentences[index], parent, token, score, int(steps[index]), weights)
        retired = [(self.sentences[i].tag, self.sentences[i].ranked()) for i in np.flatnonzero(done)]

        # Every slot takes the state and history of its parent; the new token goes in its sentence's next column.
        live = np.isfinite(new_score)
        token_log_probs = np.full(self.capacity, -np.inf)
        token_log_probs[live] = new_score[live] - self.scores[parent_of[live]]
        column = np.zeros(self.capacity, np.int64)
        column[self.slots] = np.repeat(steps - 1, beams)
        self._ensure_capacity(int(steps.max()))
        self.tensors.advance(state, parent_of)
        self.tokens = self.tokens[parent_of]
        self.token_log_probs = self.token_log_probs[parent_of]
        every = np.arange(self.capacity)
        self.tokens[every, column] = new_token
        self.token_log_probs[every, column] = token_log_probs
        if self.attention is not None:
            self.attention = self.attention[parent_of]
            self.attention[every, column, :] = weights[parent_of]
        self.scores, self.prev, self.steps = new_score, new_token, steps
        if retired:
            self._keep_sentences(~done)
        return retired

    def _greedy_step(self, members: np.ndarray, rows: np.ndarray, best_values: np.ndarray, best_tokens: np.ndarray,
                     steps: np.ndarray, done: np.ndarray, events: list, new_token: np.ndarray,
                     new_score: np.ndarray) -> None:
        """``step`` for the sentences ``members`` of beam 1 (slots ``rows``): the best token ends the sentence
        (</s> or the length limit) or continues it on the same slot."""
        score = self.scores[rows] + best_values.astype(np.float64)
        valid = score > -np.inf
        finishing = valid & ((best_tokens == self.model.eos_id) | (steps[members] >= self.limits[members]))
        self.finished_counts[members] += finishing
        done[members] = finishing | ~valid
        for i in np.flatnonzero(finishing).tolist():
            events.append((int(members[i]), int(rows[i]), int(best_tokens[i]), float(score[i])))
        new_token[rows] = best_tokens
        new_score[rows] = score

    def _finish(self, sentence: _Sentence, parent: int, token: int, score: float, step: int,
                weights: np.ndarray | None) -> None:
        """Record the hypothesis that ends with ``token`` on slot ``parent`` after ``step`` tokens."""
        history = step - 1
        complete = token == self.model.eos_id
        attention = None
        if sentence.options.return_attention and weights is not None and self.attention is not None:
            attention = np.concatenate([self.attention[parent, :history], weights[parent][None]], 0)[
                :, : sentence.source_length]
        sentence.finished.append(Hypothesis(
            self.tokens[parent, :history].tolist() + ([] if complete else [token]),
            _normalized(score, step, sentence.options.length_penalty), score, complete, attention,
            np.append(self.token_log_probs[parent, :history], score - self.scores[parent])))

    # ---- slot bookkeeping -----------------------------------------------------------------------------------

    def _per_slot(self) -> dict[str, np.ndarray]:
        """The search's own per-slot arrays (the decoder's inputs are in ``tensors``)."""
        arrays = {"prev": self.prev, "scores": self.scores, "tokens": self.tokens,
                  "token_log_probs": self.token_log_probs}
        if self.attention is not None:
            arrays["attention"] = self.attention
        return arrays

    def _grow(self, extra: int, width: int, fresh: Encoded) -> None:
        """Add ``extra`` free slots and make room for sources of ``width`` tokens (padding is masked, so nothing
        attends to it); the newcomers' encoder output ``fresh`` gives the tensors' sizes."""
        capacity, wider = self.capacity, width - self.width
        self.tensors.resize(capacity + extra, width, fresh)
        for name, array in self._per_slot().items():
            setattr(self, name, np.concatenate([array, np.zeros((extra,) + array.shape[1:], array.dtype)]))
        if self.attention is not None and wider:
            self.attention = np.pad(self.attention, ((0, 0), (0, 0), (0, wider)))
        self.free.extend(range(capacity, capacity + extra))

    def _compact(self) -> None:
        """Move the slots in use to the front and drop the rest; narrow the source width to the longest active."""
        keep = np.sort(self.slots)
        width = max(s.source_length for s in self.sentences)
        renumber = np.zeros(self.capacity, np.int64)
        renumber[keep] = np.arange(len(keep))
        for name, array in self._per_slot().items():
            setattr(self, name, array[keep][:, :, :width] if name == "attention" else array[keep])
        self.tensors.compact(keep, width)
        self.slots = renumber[self.slots]
        self.free = []

    def _ensure_capacity(self, length: int) -> None:
        """Grow the history arrays to hold ``length`` tokens per row."""
        capacity = self.tokens.shape[1]
        if length <= capacity:
            return
        grow = max(length, 2 * capacity, 16) - capacity
        self.tokens = np.pad(self.tokens, ((0, 0), (0, grow)))
        self.token_log_probs = np.pad(self.token_log_probs, ((0, 0), (0, grow)))
        if self.attention is not None:
            self.attention = np.pad(self.attention, ((0, 0), (0, grow), (0, 0)))


def _best_candidates(scores: np.ndarray, row_values: np.ndarray, row_tokens: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best continuations of each sentence's beams, best first, ties broken by the lower beam, then the
    lower token (the order the closed-loop search ranked beam x vocabulary candidates in).

    scores [n, beam] (cumulative, float64); row_values [n * beam, r] and row_tokens [n * beam, r]: each beam's r >= k
    best next-token log-probs and tokens. The sentence's best ``k`` are among those beam x r candidates, scored in
    float64 -> parent beam [n, k], token [n, k], score [n, k].
    """
    n, beam = scores.shape
    r = row_values.shape[1]
    values = (scores.reshape(-1, 1) + row_values.astype(np.float64)).reshape(n, beam * r)
    parents = np.broadcast_to(np.repeat(np.arange(beam), r), (n, beam * r))
    tokens = row_tokens.reshape(n, beam * r)
    order = np.lexsort((tokens, parents, -values), axis=1)[:, :k]
    rows = np.arange(n)[:, None]
    return parents[rows, order], tokens[rows, order], values[rows, order]


def search(model: StepModel, sources: list[list[int]], options: SearchOptions) -> list[list[Hypothesis]]:
    """Translate a batch of tokenized sources at once; returns the n-best hypotheses of each, best first."""
    stepper = StepSearch(model)
    stepper.admit(sources, [options] * len(sources), list(range(len(sources))))
    results: list[list[Hypothesis]] = [[] for _ in sources]
    while len(stepper):
        for index, hypotheses in stepper.step():
            results[index] = hypotheses
    return results
