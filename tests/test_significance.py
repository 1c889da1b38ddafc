"""Paired bootstrap BLEU differences: the point estimate is sacreBLEU's own score, the interval behaves."""

import numpy as np
import pytest
from sacrebleu.metrics import BLEU

from training.significance import bleu_from_statistics, bleu_interval, gain_difference, paired_gain, sentence_statistics

REFERENCES = [f"a man in a {colour} shirt is riding a bike down street {i}"
              for i, colour in enumerate(["red", "blue", "green", "white"] * 50)]
GOOD = [r.replace("riding", "rides") for r in REFERENCES]
BAD = [" ".join(r.split()[:4]) for r in REFERENCES]


def test_statistics_reproduce_sacrebleu_corpus_score():
    stats = sentence_statistics(GOOD, REFERENCES)
    assert stats.shape[0] == len(REFERENCES)
    assert abs(bleu_from_statistics(stats.sum(0)) - BLEU().corpus_score(GOOD, [REFERENCES]).score) < 1e-9


def test_a_clearly_better_system_gets_an_interval_above_zero():
    good, bad = sentence_statistics(GOOD, REFERENCES), sentence_statistics(BAD, REFERENCES)
    gain = paired_gain(good, bad, samples=300)
    assert gain.low > 0 and gain.significant and gain.p_not_positive == 0
    assert gain.low <= gain.delta <= gain.high
    assert paired_gain(bad, good, samples=300).high < 0


def test_a_single_score_interval_holds_it_and_narrows_with_more_sentences():
    # Half the sentences perfect, half cut short: the score depends on which sentences a test set happens to hold.
    mixed = [good if i % 2 else bad for i, (good, bad) in enumerate(zip(REFERENCES, BAD))]
    stats = sentence_statistics(mixed, REFERENCES)
    point = bleu_from_statistics(stats.sum(0))
    low, high = bleu_interval(stats, samples=300)
    assert low < point < high
    wide_low, wide_high = bleu_interval(stats[:40], samples=300)
    assert wide_high - wide_low > high - low
    perfect = sentence_statistics(REFERENCES, REFERENCES)
    assert bleu_interval(perfect, samples=50) == pytest.approx((100.0, 100.0))


def test_identical_systems_differ_by_exactly_zero():
    good = sentence_statistics(GOOD, REFERENCES)
    same = paired_gain(good, good, samples=100)
    assert same.delta == same.low == same.high == 0 and not same.significant


def test_gain_difference_separates_groups():
    mixed = [g if i < 100 else b for i, (g, b) in enumerate(zip(GOOD, BAD))]  # good on the first half only
    a, b = sentence_statistics(GOOD, REFERENCES), sentence_statistics(mixed, REFERENCES)
    first, second = np.arange(100), np.arange(100, 200)
    difference = gain_difference(a, b, second, first, samples=300)
    assert difference.delta > 50 and difference.low > 0
    assert gain_difference(a, b, first, second, samples=300).high < 0
