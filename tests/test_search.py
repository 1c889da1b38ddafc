"""The shared search (inference/search.py) on the exported tiny model and on hand-made step models."""

from __future__ import annotations

import numpy as np
import pytest

from inference.onnx_model import OnnxSeq2Seq
from inference.search import SearchOptions, search
from inference.step_model import Encoded
from inference.translator import SentenceTranslator


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> OnnxSeq2Seq:
    return OnnxSeq2Seq(tiny_model_dir, threads=1)


@pytest.fixture(scope="module")
def val_sources(model, corpus_dir) -> list[list[int]]:
    from training.data import load_pairs

    translator = SentenceTranslator(model, model.tokenizer)
    return [translator.encode(s) for s, _ in load_pairs(corpus_dir, "val", "de", "en", clean=False)[:100]]


def reference_greedy(model: OnnxSeq2Seq, source: list[int], max_length: int) -> tuple[list[int], float]:
    """Textbook greedy decoding of one sentence, written independently of decoding.search."""
    src, lengths = np.array([source], dtype=np.int64), np.array([len(source)], dtype=np.int64)
    encoded = model.encode(src, lengths)
    state, prev, tokens, total = encoded.state, np.array([model.bos_id]), [], 0.0
    for _ in range(max_length):
        log_probs, state, _ = model.step(prev, state, encoded)
        token = int(log_probs[0].argmax())
        total += float(log_probs[0, token])
        if token == model.eos_id:
            break
        tokens.append(token)
        prev = np.array([token])
    return tokens, total


def test_beam_one_is_greedy(model, val_sources):
    options = SearchOptions(beam_size=1)
    results = search(model, val_sources[:40], options)
    for source, (best,) in zip(val_sources[:40], results):
        tokens, log_prob = reference_greedy(model, source, options.max_length(len(source)))
        assert best.tokens == tokens
        assert best.log_prob == pytest.approx(log_prob, abs=1e-4)


@pytest.mark.parametrize("beam", [2, 5])
def test_beam_never_scores_below_greedy_on_val(model, val_sources, beam):
    """Holds on these sentences (measured), though not guaranteed in general: see the hand-made case below."""
    greedy = search(model, val_sources, SearchOptions(beam_size=1))
    beamed = search(model, val_sources, SearchOptions(beam_size=beam))
    worse = [i for i, (g, b) in enumerate(zip(greedy, beamed)) if b[0].score < g[0].score - 1e-6]
    assert worse == []


class TreeModel:
    """A StepModel whose next-token distribution depends only on the prefix, given as a tree.

    ``tree`` maps a prefix (tuple of token ids) to {token: probability}; tokens not listed get ~0.
    The decoder state [B, 1] holds the id of the current prefix.
    """

    bos_id, eos_id, vocab = 2, 3, 16

    def __init__(self, tree: dict[tuple[int, ...], dict[int, float]]) -> None:
        self.tree = tree
        self.prefixes: list[tuple[int, ...]] = [()]

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> Encoded:
        batch, length = src.shape
        mask = np.arange(length)[None, :] < lengths[:, None]
        return Encoded(np.zeros((batch, length, 1), np.float32), np.zeros((batch, length, 1), np.float32), mask,
                       np.zeros((batch, 1), np.float32))

    def step(self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded):
        log_probs = np.full((len(prev_tokens), self.vocab), np.log(1e-9), dtype=np.float32)
        new_state = np.zeros_like(state)
        for row, (token, prefix_id) in enumerate(zip(prev_tokens, state[:, 0].astype(int))):
            prefix = self.prefixes[prefix_id] + (() if token == self.bos_id else (int(token),))
            if prefix not in self.prefixes:
                self.prefixes.append(prefix)
            new_state[row, 0] = self.prefixes.index(prefix)
            for next_token, p in self.tree.get(prefix, {self.eos_id: 1.0}).items():
                log_probs[row, next_token] = np.log(p)
        return log_probs, new_state, None


A, B, C, X, Y, Z, P, Q, W = range(4, 13)
EOS = TreeModel.eos_id
# Greedy: A X </s> (p = 0.4 * 0.4 * 1 = 0.16). Beam 2 keeps B P and B Q (0.175, 0.1715) over A X (0.16),
# and every completion of those ends with p <= 0.0875 (per token too, so length normalization cannot help).
GARDEN_PATH = {(): {A: 0.4, B: 0.35, C: 0.25}, (A,): {X: 0.4, Y: 0.3, Z: 0.3}, (A, X): {EOS: 1.0},
               (B,): {P: 0.5, Q: 0.49, EOS: 0.01}, (B, P): {EOS: 0.5, W: 0.5}, (B, Q): {EOS: 0.5, W: 0.5},
               (B, P, W): {EOS: 0.01}, (B, Q, W): {EOS: 0.01}}


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_can_score_below_greedy_so_the_val_property_is_empirical(length_penalty):
    """Beam search prunes the greedy prefix when other prefixes look better early on; nothing in the
    algorithm (ours or the textbook one) bounds the final score by the greedy one."""
    source = [[5, 6, EOS]]
    greedy = search(TreeModel(GARDEN_PATH), source, SearchOptions(beam_size=1, length_penalty=length_penalty))[0][0]
    beam = search(TreeModel(GARDEN_PATH), source, SearchOptions(beam_size=2, length_penalty=length_penalty))[0][0]
    assert greedy.tokens == [A, X] and greedy.log_prob == pytest.approx(np.log(0.16), abs=1e-5)
    assert beam.tokens[0] == B
    assert beam.score < greedy.score


def test_n_best_lists_are_ordered_distinct_and_consistent(model, val_sources):
    sources = val_sources[:30]
    nbest = search(model, sources, SearchOptions(beam_size=5, n_best=5))
    single = search(model, sources, SearchOptions(beam_size=5, n_best=1))
    for hypotheses, (best,) in zip(nbest, single):
        assert 1 <= len(hypotheses) <= 5
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hypotheses}) == len(hypotheses)
        assert hypotheses[0].tokens == best.tokens


def test_n_best_on_the_tree_model_is_exact():
    tree = {(): {A: 0.6, B: 0.3, C: 0.1}, (A,): {EOS: 1.0}, (B,): {EOS: 1.0}, (C,): {EOS: 1.0}}
    hypotheses = search(TreeModel(tree), [[5, EOS]], SearchOptions(beam_size=3, n_best=3, length_penalty=0.0))[0]
    assert [h.tokens for h in hypotheses] == [[A], [B], [C]]
    assert [h.log_prob for h in hypotheses] == pytest.approx(np.log([0.6, 0.3, 0.1]), abs=1e-5)


@pytest.mark.parametrize("beam", [1, 4])
def test_output_length_is_capped_relative_to_the_source(model, val_sources, beam):
    options = SearchOptions(beam_size=beam, max_length_ratio=0.5, max_length_offset=1)
    for source, hypotheses in zip(val_sources[:20], search(model, val_sources[:20], options)):
        limit = options.max_length(len(source))
        for h in hypotheses:
            # the limit counts decoding steps, </s> included when the hypothesis is complete
            assert len(h.tokens) + (1 if h.complete else 0) <= limit


def test_a_never_ending_model_stops_at_the_cap_and_says_so():
    tree = {(A,) * n: {A: 1.0} for n in range(50)}
    options = SearchOptions(beam_size=2, max_length_ratio=1.0, max_length_offset=2)
    (best, *_), = search(TreeModel(tree), [[5, 6, 7, EOS]], options)
    assert best.tokens == [A] * options.max_length(4) and not best.complete


def test_attention_rows_are_distributions_over_the_real_source(model, val_sources):
    translator = SentenceTranslator(model, model.tokenizer)
    sources = sorted(val_sources[:8], key=len)  # padded batch: the short ones must not attend to padding
    for source, (t,) in zip(sources, translator.translate_ids(sources, SearchOptions(beam_size=3,
                                                                                      return_attention=True))):
        assert t.attention.shape == (len(t.target_tokens), len(source))
        np.testing.assert_allclose(t.attention.sum(axis=1), 1.0, atol=1e-4)
