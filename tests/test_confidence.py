"""Translation confidence: signals from the search, the calibrated model in the card, and its fitting."""

from __future__ import annotations

import importlib.util
import math
import shutil

import numpy as np
import pytest
from conftest import REPO

from inference.card import read_card
from inference.confidence import (
    RERANKED_SIGNALS,
    SIGNALS,
    ConfidenceModel,
    detector_for,
    nbest_agreement,
    signals,
    source_language_log_prob,
)
from inference.onnx_model import OnnxSeq2Seq
from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from training.calibrate import calibrate, deciles, expected_calibration_error, random_strings, reference_agreement

SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.",
             "Eine Frau mit einem roten Hut sitzt auf einer Bank und liest ein Buch."]


def test_signals_are_the_documented_functions_of_their_inputs():
    log_probs = np.log(np.array([0.5, 0.25, 0.9, 0.8]))
    values = dict(zip(SIGNALS, signals("abcdefgh", [5, 1, 7], log_probs, unk_id=1, language_log_prob=-0.1)))
    assert values["mean_log_prob"] == pytest.approx(np.mean(log_probs))
    assert values["min_log_prob"] == pytest.approx(math.log(0.25))
    assert values["length_ratio"] == pytest.approx(math.log(4 / 4))
    assert values["pieces_per_char"] == pytest.approx(3 / 8)
    assert values["unknown_rate"] == pytest.approx(1 / 3)
    assert values["source_language_log_prob"] == -0.1


def test_language_identification_signal_separates_german_from_french():
    detector = detector_for("de")
    german = source_language_log_prob("Zwei Hunde spielen im Schnee vor einem Haus.", "de", detector)
    french = source_language_log_prob("Deux chiens jouent dans la neige devant une maison.", "de", detector)
    assert german > math.log(0.9) and french < math.log(0.01)


def test_card_round_trip_and_refusals():
    model = ConfidenceModel(SIGNALS, np.arange(6.0), np.ones(6), np.linspace(-1, 1, 6), 0.3)
    again = ConfidenceModel.from_card({"model": model.to_card()})
    features = np.random.default_rng(0).normal(size=(5, 6))
    assert np.allclose(model.probability(features), again.probability(features), atol=1e-6)
    assert np.all((0 < again.probability(features)) & (again.probability(features) < 1))
    broken = [{"model": {**model.to_card(), "signals": ["mean_log_prob"]}},
              {"model": {**model.to_card(), "scale": [0.0] * 6}},
              {"model": {**model.to_card(), "weights": [float("nan")] * 6}},
              {"model": {**model.to_card(), "mean": [1.0] * 5}},
              {"nothing": 1}]
    for entry in broken:
        with pytest.raises(ValueError, match="confidence.model"):
            ConfidenceModel.from_card(entry)


def test_the_card_may_add_a_model_over_the_reranking_signals():
    width = len(RERANKED_SIGNALS)
    reranked = ConfidenceModel(RERANKED_SIGNALS, np.zeros(width), np.ones(width), np.linspace(-1, 1, width), 0.1)
    plain = ConfidenceModel(SIGNALS, np.zeros(6), np.ones(6), np.ones(6), 0.0)
    entry = {"model": plain.to_card(), "model_reranked": reranked.to_card()}
    first, second = ConfidenceModel.pair_from_card(entry)
    assert first.signals == SIGNALS and second.signals == RERANKED_SIGNALS
    features = np.random.default_rng(1).normal(size=(4, width))
    assert np.allclose(second.probability(features), reranked.probability(features), atol=1e-6)
    assert ConfidenceModel.pair_from_card({"model": plain.to_card()})[1] is None
    assert ConfidenceModel.pair_from_card(None) == (None, None)
    with pytest.raises(ValueError, match="confidence.model_reranked must list"):
        ConfidenceModel.pair_from_card({"model": plain.to_card(), "model_reranked": plain.to_card()})


def test_nbest_agreement_is_each_texts_mean_chrf_against_the_others():
    same = nbest_agreement(["Two dogs play in the snow."] * 3)
    assert np.allclose(same, 100.0)
    split = nbest_agreement(["Two dogs play in the snow.", "Two dogs play in the snow.", "A cat sleeps."])
    assert split[0] == split[1] > split[2] and split[0] < 100.0


def test_token_log_probs_add_up_to_the_hypothesis_score(tiny_model_dir):
    model = OnnxSeq2Seq(tiny_model_dir)
    translator = SentenceTranslator(model, model.tokenizer, source_language="de")
    for beam in (1, 4):
        for nbest in translator.translate(SENTENCES, SearchOptions(beam_size=beam, n_best=beam)):
            for translation in nbest:
                assert len(translation.token_log_probs) == len(translation.target_tokens)
                assert np.all(translation.token_log_probs <= 0)
                assert translation.token_log_probs.mean() == pytest.approx(translation.score, abs=1e-6)
                assert translation.signals.shape == (len(SIGNALS),)


def test_a_sentence_gets_the_same_signals_alone_and_in_a_batch(tiny_model_dir):
    model = OnnxSeq2Seq(tiny_model_dir)
    translator = SentenceTranslator(model, model.tokenizer, source_language="de")
    options = SearchOptions(beam_size=4)
    together = translator.translate(SENTENCES, options)
    for sentence, batched in zip(SENTENCES, together):
        alone = translator.translate([sentence], options)[0]
        # Same output tokens; log-probs agree to float32 rounding (GEMM kernels differ with the batch size).
        assert alone[0].text == batched[0].text
        assert np.allclose(alone[0].signals, batched[0].signals, rtol=0, atol=1e-5)


def test_calibration_statistics():
    outcome = np.array([0, 0, 1, 1, 1, 0, 1, 1, 0, 1], dtype=float)
    assert expected_calibration_error(outcome.copy(), outcome) == 0.0
    assert expected_calibration_error(np.full(10, 0.6), outcome) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.9), outcome) == pytest.approx(0.3)
    rows = deciles(np.linspace(0, 1, 100), np.linspace(0, 100, 100))
    assert len(rows) == 10 and [r["sentences"] for r in rows] == [10] * 10
    assert rows[0]["chrf"] < rows[-1]["chrf"] and rows[0]["good"] == 0 and rows[-1]["good"] == 1
    assert random_strings(30, seed=1) == random_strings(30, seed=1) != random_strings(30, seed=2)


def test_reference_agreement_pairs_the_rows_of_each_repeated_source():
    # 30 sources twice (rows 2k, 2k+1) and 10 once: only the repeated ones count.
    sources = [f"s{k}" for k in range(30) for _ in range(2)] + [f"t{k}" for k in range(10)]
    rng = np.random.default_rng(1)
    quality = rng.uniform(0, 100, len(sources))
    confidence = rng.uniform(0, 1, len(sources))
    agreement = reference_agreement(sources, quality, confidence, good_chrf=50)
    a, b = quality[0:60:2], quality[1:60:2]
    assert agreement["sources"] == 30
    assert agreement["good_label_agreement"] == pytest.approx(np.mean((a >= 50) == (b >= 50)), abs=1e-3)
    same = reference_agreement(sources, np.r_[np.repeat(quality[0:60:2], 2), np.zeros(10)], confidence, 50)
    assert same["spearman_chrf_reference_a_vs_b"] == 1.0 and same["good_label_agreement"] == 1.0
    assert reference_agreement([f"u{k}" for k in range(40)], quality[:40], confidence[:40], 50) is None


def test_calibration_writes_a_fitted_and_measured_confidence_into_the_card(tiny_model_dir, corpus_dir, tmp_path):
    model_dir = tmp_path / "de-en"
    shutil.copytree(tiny_model_dir, model_dir)
    # A model trained for seconds rarely reaches chrF 50; a lower bar still splits its outputs in two.
    calibrate(model_dir, corpus_dir, max_per_set=80, plot=tmp_path / "plot.png", good_chrf=25)
    entry = read_card(model_dir).confidence
    assert set(entry["fitted_on"]) == {"multi30k:val", "fr", "cs", "random"}
    assert entry["measured_on"]["multi30k:test2016"] == 80
    confidence = ConfidenceModel.from_card(entry)
    stats = entry["confidence"]
    assert entry["good_chrf"] == confidence.good_chrf == 25
    assert {"spearman_chrf", "roc_auc_good", "expected_calibration_error", "roc_auc_vs_fr", "roc_auc_vs_cs",
            "roc_auc_vs_random"} <= set(stats)
    # Even a model trained for seconds tells its own language from gibberish and from French, if less surely.
    assert stats["roc_auc_vs_random"] > 0.7 and stats["roc_auc_vs_fr"] > 0.7
    assert len(entry["deciles"]) == 10 and (tmp_path / "plot.png").stat().st_size > 0
    # Not reranked: one model serves the card's beam and greedy (the other search a caller can ask for).
    default = f"beam{entry['search']['beam_size']}"
    assert entry["fitted_on_searches"] == {"model": [default, "greedy"]} and list(entry["other_searches"]) == ["greedy"]
    assert {"spearman_chrf", "roc_auc_good", "expected_calibration_error", "roc_auc_vs_fr"} <= set(
        entry["other_searches"]["greedy"])
    translator = SentenceTranslator(OnnxSeq2Seq(model_dir), OnnxSeq2Seq(model_dir).tokenizer, source_language="de",
                                    confidence=confidence)
    german, french = (translator.translate([s], SearchOptions(beam_size=4))[0][0].confidence for s in
                      ("Zwei Hunde spielen im Schnee.", "Deux chiens jouent dans la neige."))
    assert 0 <= french < german <= 1


def _ceiling_script():
    spec = importlib.util.spec_from_file_location("confidence_ceiling", REPO / "scripts" / "confidence_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_script_compares_fits_on_held_out_and_training_labels(tiny_model_dir, corpus_dir):
    script = _ceiling_script()
    card = read_card(tiny_model_dir)
    sets, samples, valid, test = script.training_samples(card, corpus_dir, None, size=50)
    held_out = {pair for name in (*valid, *test) for pair in sets[name]}
    assert list(samples) == ["multi30k:train sample"] and len(set(samples["multi30k:train sample"])) == 50
    assert not held_out & set(samples["multi30k:train sample"])

    # The tiny model's translations reach sentence chrF 12 about one time in ten: a bar that splits them.
    result = script.ceiling(tiny_model_dir, corpus_dir, train_sample=80, max_per_set=80, good_chrf=12)
    assert set(result["memorization"]) == {"multi30k"}
    assert len(result["scores"]) == 7
    for by_set in result["scores"].values():
        assert list(by_set) == ["pooled", "multi30k:test2016"]
        spearman, auc = by_set["pooled"]
        assert -1 <= spearman <= 1 and 0 <= auc <= 1
    # One test set: pooled and per set are the same rows.
    assert all(v["pooled"] == v["multi30k:test2016"] for v in result["scores"].values())
    table = script.markdown(result)
    assert "ceiling: logistic fitted on the test sets" in table and "| multi30k |" in table
