"""The closed-loop batched search as it was before the steppable search (inference/search.py), kept as the
oracle the steppable search is tested against: same options, same pruning, one search per batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inference.search import Hypothesis, SearchOptions, StepModel, _normalized, pad_batch


def _top_k(candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices [N, k] and values [N, k] of the k largest entries of each row of candidates [N, C], best first
    (ties: lowest index first).

    k argmax passes, each masking the winner: for the small k of the search (2 x beam) this is far cheaper than
    ``argpartition`` over rows of beam x vocabulary entries. ``candidates`` is restored before returning.
    """
    rows = np.arange(len(candidates))
    top = np.empty((len(candidates), k), dtype=np.int64)
    values = np.empty((len(candidates), k), dtype=candidates.dtype)
    for i in range(k):
        top[:, i] = candidates.argmax(axis=1)
        values[:, i] = candidates[rows, top[:, i]]
        candidates[rows, top[:, i]] = -np.inf
    for i in reversed(range(k)):  # reverse order: a row with fewer than k finite entries repeats an index
        candidates[rows, top[:, i]] = values[:, i]
    return top, values


@dataclass
class _Sentence:
    """Bookkeeping for one source sentence during beam search."""

    source_length: int
    max_length: int
    finished: list[Hypothesis] = field(default_factory=list)
    done: bool = False



def closed_loop_search(model: StepModel, sources: list[list[int]], options: SearchOptions) -> list[list[Hypothesis]]:
    """Translate a batch of tokenized sources; returns the n-best hypotheses of each, best first.

    A sentence's result does not depend on the rest of the batch: padding is masked, and each sentence
    keeps its own beams, length limit and stopping rule. Rows whose sentence is finished are dropped from
    the decoder batch so that short sentences stop costing compute.
    """
    src, lengths = pad_batch(sources)
    encoded = model.encode(src, lengths)
    batch, beam = len(sources), options.beam_size
    sentences = [_Sentence(int(n), options.max_length(int(n))) for n in lengths]

    # Alive rows: sentence index and beam tokens/scores/attention for each row of the decoder batch.
    row_sentence = np.repeat(np.arange(batch), beam)
    encoded = encoded.select(row_sentence)
    state = encoded.state
    scores = np.tile(np.array([0.0] + [-np.inf] * (beam - 1)), batch)  # [R] cumulative log-prob
    tokens = np.zeros((batch * beam, 0), dtype=np.int64)
    token_log_probs = np.zeros((batch * beam, 0), dtype=np.float64)  # [R, t]: per-step log-prob of each token
    attention = np.zeros((batch * beam, 0, encoded.mask.shape[1]), dtype=np.float32)
    prev = np.full(batch * beam, model.bos_id, dtype=np.int64)

    step = 0
    while len(row_sentence):
        log_probs, state, weights = model.step(prev, state, encoded)
        step += 1
        vocab = log_probs.shape[1]
        n_alive = len(row_sentence) // beam
        candidates = (scores[:, None] + log_probs).reshape(n_alive, beam * vocab)
        # 2 * beam candidates are enough to find `beam` that do not end in </s>.
        top, top_scores = _top_k(candidates, min(2 * beam, candidates.shape[1]))

        keep_rows, keep_tokens, keep_scores, keep_alive_sentence = [], [], [], []
        keep_token_log_probs = []
        for group in range(n_alive):
            sentence_index = row_sentence[group * beam]
            sentence = sentences[sentence_index]
            kept = 0
            for flat, score in zip(top[group], top_scores[group]):
                if score == -np.inf:
                    break
                row = group * beam + flat // vocab
                token = int(flat % vocab)
                if token == model.eos_id or step >= sentence.max_length:
                    hyp_tokens = tokens[row].tolist() + ([] if token == model.eos_id else [token])
                    hyp_attention = None
                    if options.return_attention and weights is not None:
                        hyp_attention = np.concatenate([attention[row], weights[row][None]], 0)[
                            :, : sentence.source_length]
                    complete = token == model.eos_id
                    sentence.finished.append(Hypothesis(
                        hyp_tokens, _normalized(float(score), step, options.length_penalty),
                        float(score), complete, hyp_attention,
                        np.append(token_log_probs[row], float(score) - scores[row])))
                    if len(sentence.finished) >= beam:
                        break
                else:
                    keep_rows.append(row)
                    keep_tokens.append(token)
                    keep_scores.append(score)
                    keep_token_log_probs.append(float(score) - scores[row])
                    kept += 1
                    if kept == beam:
                        break
            if len(sentence.finished) >= beam or step >= sentence.max_length or kept == 0:
                sentence.done = True
                keep_rows, keep_tokens, keep_scores, keep_token_log_probs = (
                    keep_rows[: len(keep_rows) - kept], keep_tokens[: len(keep_tokens) - kept],
                    keep_scores[: len(keep_scores) - kept], keep_token_log_probs[: len(keep_token_log_probs) - kept])
                continue
            # Pad to a full beam with dead copies so every alive sentence keeps exactly `beam` rows.
            for _ in range(beam - kept):
                keep_rows.append(keep_rows[-1])
                keep_tokens.append(keep_tokens[-1])
                keep_scores.append(-np.inf)
                keep_token_log_probs.append(-np.inf)
            keep_alive_sentence.append(sentence_index)

        rows = np.array(keep_rows, dtype=np.int64)
        previous_row_sentence = row_sentence
        row_sentence = np.repeat(np.array(keep_alive_sentence, dtype=np.int64), beam)
        tokens = np.concatenate([tokens[rows], np.array(keep_tokens, dtype=np.int64)[:, None]], axis=1)
        token_log_probs = np.concatenate(
            [token_log_probs[rows], np.array(keep_token_log_probs, dtype=np.float64)[:, None]], axis=1)
        if options.return_attention and weights is not None:
            attention = np.concatenate([attention[rows], weights[rows][:, None]], axis=1)
        else:
            attention = attention[rows]
        scores = np.array(keep_scores, dtype=np.float64)
        state = state[rows]
        # Beams are only reordered within their sentence, so the encoder rows change only when a sentence is done.
        if not np.array_equal(row_sentence, previous_row_sentence):
            encoded = encoded.select(rows)
        prev = tokens[:, -1] if len(rows) else prev[:0]

    results = []
    for sentence in sentences:
        ranked = sorted(sentence.finished, key=lambda h: h.score, reverse=True)
        results.append(ranked[: options.n_best])
    return results
