"""Reranking the n-best with the reverse direction's model, on the shipped de-en and en-de ONNX models."""

import json
import shutil

import httpx
import numpy as np
import pytest

from inference.onnx_model import OnnxSeq2Seq
from inference.rerank import Reranker, forced_log_probs
from inference.search import SearchOptions, search
from inference.translator import SentenceTranslator
from tests.conftest import REPO

SENTENCES = [
    "Ein Mann fährt mit dem Fahrrad einen Hügel hinunter.",
    "Zwei Kinder spielen im Sand am Strand.",
    "Eine Frau in einem roten Kleid singt auf einer Bühne.",
    "Ein Hund springt über einen Baumstamm im Wald.",
    "Mehrere Leute sitzen an einem Tisch und essen.",
    "Ein kleiner Junge hält einen Ball in der Hand.",
    "Ich habe morgen einen Termin beim Zahnarzt.",
    "Wir sind gestern ins Kino gegangen.",
    "Ein Arbeiter repariert das Dach eines Hauses.",
    "Die Musiker spielen auf der Straße für Geld.",
    "Ein Mädchen mit Brille liest ein Buch.",
    "Zwei Männer unterhalten sich vor einem Geschäft.",
]
WEIGHT = 1.0


@pytest.fixture(scope="module")
def forward() -> OnnxSeq2Seq:
    return OnnxSeq2Seq(REPO / "models" / "de-en")


@pytest.fixture(scope="module")
def reverse() -> OnnxSeq2Seq:
    return OnnxSeq2Seq(REPO / "models" / "en-de")


def test_forced_scoring_reproduces_the_searchs_log_probabilities(forward):
    translator = SentenceTranslator(forward, forward.tokenizer)
    sources = [translator.encode(s) for s in SENTENCES]
    hypotheses = [nbest[0] for nbest in search(forward, sources, SearchOptions(beam_size=1))]
    outputs = [h.tokens + [forward.eos_id] for h in hypotheses]
    forced = forced_log_probs(forward, sources, outputs)
    np.testing.assert_allclose(forced, [h.token_log_probs.sum() for h in hypotheses], atol=1e-3)


def test_reranking_orders_each_beam_by_the_combined_score(forward, reverse):
    reranker = Reranker(reverse, reverse.tokenizer, WEIGHT)
    plain = SentenceTranslator(forward, forward.tokenizer)
    reranked = SentenceTranslator(forward, forward.tokenizer, reranker=reranker)
    options = SearchOptions(beam_size=5, n_best=5)
    before, after = plain.translate(SENTENCES, options), reranked.translate(SENTENCES, options)
    changed = 0
    for sentence, old, new in zip(SENTENCES, before, after):
        assert sorted(t.text for t in old) == sorted(t.text for t in new)  # the same beam, reordered
        reverse_scores = reranker.reverse_scores([sentence], [[t.text for t in new]])[0]
        combined = np.array([t.score for t in new]) + WEIGHT * reverse_scores
        assert np.all(np.diff(combined) <= 1e-9)
        changed += old[0].text != new[0].text
    assert changed >= 1  # otherwise this test could not tell reranking from plain beam search
    best_only = reranked.translate(SENTENCES, SearchOptions(beam_size=5))  # n_best 1: still the whole beam reranked
    assert [n[0].text for n in best_only] == [n[0].text for n in after] and all(len(n) == 1 for n in best_only)


@pytest.fixture(scope="module")
def reranking_models(tmp_path_factory):
    """The shipped de-en and en-de, de-en's card asking to be reranked by en-de."""
    root = tmp_path_factory.mktemp("reranking") / "models"
    for name in ("de-en", "en-de"):
        shutil.copytree(REPO / "models" / name, root / name)
    card_path = root / "de-en" / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["decoding_defaults"]["rerank"] = {"model": "en-de", "weight": WEIGHT}
    card_path.write_text(json.dumps(card), encoding="utf-8")  # checksums cover the other files only
    return root


def test_the_service_answers_with_the_reranked_best_unless_told_not_to(reranking_models, forward, reverse):
    from service_helpers import running_service

    translator = SentenceTranslator(forward, forward.tokenizer, reranker=Reranker(reverse, reverse.tokenizer, WEIGHT))
    expected = [n[0].text for n in translator.translate(SENTENCES, SearchOptions(beam_size=5))]
    plain = [n[0].text for n in SentenceTranslator(forward, forward.tokenizer).translate(SENTENCES,
                                                                                         SearchOptions(beam_size=5))]
    answers = {}
    for rerank in (True, False):
        with running_service(reranking_models, rerank=rerank, cache_size=100) as base:
            for attempt in range(2):  # the second answer comes from the cache
                response = httpx.post(f"{base}/v1/translate", json={"texts": SENTENCES, "source": "de", "target": "en",
                                                                     "beam_size": 5, "n_best": 2}, timeout=120)
                assert response.status_code == 200, response.text
                answers[rerank, attempt] = [t["text"] for t in response.json()["translations"]]
            runtime = {m["id"]: m["runtime"] for m in httpx.get(f"{base}/v1/models").json()["models"]}
            assert runtime["de-en"]["reranked_by"] == ("en-de" if rerank else None)
            assert runtime["en-de"]["reranked_by"] == ("de-en" if rerank else None)  # the shipped cards rerank both ways
    assert answers[True, 0] == answers[True, 1] == expected
    assert answers[False, 0] == answers[False, 1] == plain != expected


def test_a_card_whose_reverse_model_is_not_served_decodes_without_reranking(reranking_models, tmp_path, caplog):
    from service_helpers import loaded_engine

    root = tmp_path / "models"
    shutil.copytree(reranking_models / "de-en", root / "de-en")
    engine = loaded_engine(root)
    try:
        assert engine.registry.models["de-en"].translator.reranker is None
    finally:
        engine.stop()
    assert "not served as en -> de" in caplog.text


def test_the_weight_is_chosen_on_validation_data_and_evaluation_scores_both_ways(reranking_models, corpus_dir,
                                                                                 tmp_path):
    """training.rerank sweeps the weights on the validation sets of the card's recipe (Multi30k val and Tatoeba
    valid for the shipped de-en) and writes the best mean into the card, or none where plain beam search wins;
    training.evaluate then scores the reranked search as beam5 and the plain one beside it."""
    from inference.card import read_card
    from training.evaluate import evaluate
    from training.rerank import WEIGHTS, fit

    root = tmp_path / "models"
    shutil.copytree(reranking_models, root)
    card, sweep = fit(root / "de-en", root / "en-de", corpus_dir)
    sets = set(sweep["0.0"])
    assert set(sweep) == {str(w) for w in WEIGHTS} and all(set(s) == sets for s in sweep.values())
    assert "multi30k:val" in sets and not any(name.endswith("test") or "test2016" in name for name in sets)
    mean = {w: np.mean(list(sweep[str(w)].values())) for w in WEIGHTS}
    best = max(WEIGHTS, key=mean.get)
    recorded = read_card(root / "de-en").decoding_defaults.rerank
    assert card.decoding_defaults.rerank == recorded
    if best == 0.0:  # plain beam search was best: the card asks for no reranking
        assert recorded is None
        return
    assert recorded.model == "en-de" and recorded.weight == best and recorded.fit["validation_bleu"] == sweep
    scores = evaluate(root / "de-en", corpus_dir, ["multi30k:val"], [5]).scores["multi30k:val"]
    assert set(scores) == {"beam5", "beam5-plain"}
    assert scores["beam5"]["bleu"] == sweep[str(best)]["multi30k:val"] and mean[best] > mean[0.0]
    assert scores["beam5-plain"]["bleu"] == sweep["0.0"]["multi30k:val"]


def test_the_engine_benchmark_times_the_reranked_beam_beside_the_plain_one(reranking_models, tmp_path):
    from bench import engine
    from tests.conftest import require_mirror

    corpus = str(require_mirror() / "val.{lang}.gz")
    summary = engine.main(["--model-dir", str(reranking_models / "de-en"), "--corpus", corpus, "--sentences", "4",
                           "--batch-sizes", "4", "--beams", "2", "--backends", "onnx,onnx-reranked", "--budget-s",
                           "0.1", "--gemm-sizes", "64", "--out", str(tmp_path)])
    rows = {r["backend"]: r for r in summary["rows"]}
    assert set(rows) == {"onnx", "onnx-reranked"} and all(r["sentences"] == 4 for r in rows.values())


def test_a_reranked_model_is_calibrated_and_served_with_the_reranking_signals(reranking_models, corpus_dir, tmp_path,
                                                                                forward, reverse):
    """training.calibrate on a reranking card fits a second model over the reverse score and the n-best's agreement;
    the translator uses it for a reranked beam and the plain model for a beam of one, and so does the service."""
    from service_helpers import running_service

    from inference.card import read_card
    from inference.confidence import RERANKED_SIGNALS, SIGNALS, ConfidenceModel, nbest_agreement
    from training.calibrate import calibrate

    root = tmp_path / "models"
    shutil.copytree(reranking_models, root)
    calibrate(root / "de-en", corpus_dir, max_per_set=40)
    entry = read_card(root / "de-en").confidence
    assert entry["search"]["reranked_by"] == "en-de"
    # The plain model is fitted on, and measured on, the outputs it serves: greedy, and the beam without reranking.
    plain_searches = ["greedy", f"beam{entry['search']['beam_size']}-plain"]
    assert entry["fitted_on_searches"] == {"model": plain_searches,
                                           "model_reranked": [f"beam{entry['search']['beam_size']}"]}
    assert list(entry["other_searches"]) == plain_searches
    for stats in entry["other_searches"].values():
        assert {"spearman_chrf", "roc_auc_good", "expected_calibration_error", "roc_auc_vs_random"} <= set(stats)
    plain, reranked = ConfidenceModel.pair_from_card(entry)
    assert reranked.signals == RERANKED_SIGNALS

    reranker = Reranker(reverse, reverse.tokenizer, WEIGHT)
    translator = SentenceTranslator(forward, forward.tokenizer, source_language="de", confidence=plain,
                                    reranker=reranker, reranked_confidence=reranked)
    beams = translator.translate(SENTENCES, SearchOptions(beam_size=5, n_best=5))
    for sentence, nbest in zip(SENTENCES, beams):
        best = nbest[0]
        assert best.signals.shape == (len(RERANKED_SIGNALS),)
        reverse_score = reranker.reverse_scores([sentence], [[best.text]])[0][0]
        assert best.reverse_log_prob == pytest.approx(reverse_score, abs=1e-4)
        assert best.signals[-1] == pytest.approx(nbest_agreement([t.text for t in nbest])[0])
        assert best.confidence == pytest.approx(float(reranked.probability(best.signals[None])[0]))
    greedy = translator.translate(SENTENCES[:3], SearchOptions(beam_size=1))
    for nbest in greedy:
        assert nbest[0].signals.shape == (len(SIGNALS),) and nbest[0].reverse_log_prob is None
        assert nbest[0].confidence == pytest.approx(float(plain.probability(nbest[0].signals[None])[0]))

    expected = [n[0].confidence for n in translator.translate(SENTENCES, SearchOptions(beam_size=5))]
    with running_service(root) as base:
        response = httpx.post(f"{base}/v1/translate", json={"texts": SENTENCES, "source": "de", "target": "en",
                                                             "beam_size": 5, "return_confidence": True}, timeout=120)
    assert response.status_code == 200, response.text
    assert [t["confidence"] for t in response.json()["translations"]] == pytest.approx(expected, abs=1e-4)  # the API rounds to 4 places
