"""The models committed under models/: complete, verified, within budget, and translating."""

import pytest

from inference.card import read_card, verify_files
from inference.confidence import ConfidenceModel
from inference.onnx_model import OnnxSeq2Seq
from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from tests.conftest import MODELS

SHIPPED = ["de-en", "en-de"]
# Beam-search bars per test set: test2016 lowercased BLEU, and (for models trained on it) cased BLEU on the
# Tatoeba test split carved out by the config's recipe (the bars of the corpus-training issue).
MIN_LOWERCASED_TEST2016 = {"de-en": 41.0, "en-de": 38.0}
MIN_TATOEBA_BLEU = {"de-en": 55.0, "en-de": 42.0}


@pytest.mark.parametrize("model_id", SHIPPED)
def test_model_card_is_complete_and_files_verify(model_id):
    model_dir = MODELS / model_id
    card = read_card(model_dir)
    verify_files(model_dir, card)
    src, tgt = model_id.split("-")
    assert (card.id, card.source_language, card.target_language) == (model_id, src, tgt)
    arch = card.architecture
    assert arch["cell"] in {"rnn", "gru", "lstm"} and arch["attention"] != "none"
    assert 0 < arch["parameters"] <= 10_000_000
    assert sum((model_dir / f).stat().st_size for f in card.sha256) <= 45 * 2**20
    vocab = card.vocabulary
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert card.graphs.decoder.outputs == ["log_probs", "new_state", "attention", "top_log_probs",
                                                    "top_tokens"]
    decoder = OnnxSeq2Seq(model_dir, threads=1)
    assert decoder.supports_top_k  # the search reads each row's best tokens from the graph's TopK
    assert "non-commercial" in card.training["licence"]
    parity = card.parity
    assert parity["max_abs_logprob_diff"] <= 1e-4 and parity["greedy_identical"] == parity["sentences"] >= 1014


@pytest.mark.parametrize("model_id", SHIPPED)
def test_model_card_names_its_corpora_domains_and_licences(model_id):
    training = read_card(MODELS / model_id).training
    corpora = {c["name"]: c for c in training.get("corpora", []) if c["train_pairs"]}
    if not corpora:
        pytest.skip(f"{model_id} predates per-corpus model cards (Multi30k only: see its 'data' field)")
    for corpus in corpora.values():
        assert corpus["licence"] and corpus["domain"] and corpus["cleaning"]["read"] >= corpus["train_pairs"]
    if "tatoeba" in corpora:
        assert "CC-BY 2.0 FR" in corpora["tatoeba"]["licence"] and "Tatoeba (tatoeba.org)" in training["licence"]
        assert set(training["domains"]) == {"image captions", "everyday sentences"}
    assert set(training["evaluation_sets_sha256"]) == set(training["data_recipe"]["valid"] + training["data_recipe"]["test"])


@pytest.mark.parametrize("model_id", SHIPPED)
def test_model_card_scores_carry_signatures_and_meet_the_bar(model_id):
    card = read_card(MODELS / model_id)
    scores = card.scores
    for split in scores:
        for search in ("greedy", "beam5"):
            entry = scores[split][search]
            assert entry["signatures"]["bleu"].startswith("nrefs:1|case:mixed")
            assert "case:lc" in entry["signatures"]["bleu_lowercase"]
            assert entry["bleu_lowercase"] >= entry["bleu"] > 0
            low, high = entry["bleu_interval_95"]
            assert low < entry["bleu"] < high and high - low < 10
    test2016 = scores["multi30k:test2016"]["beam5"]
    assert set(test2016["bleu_by_source_length"]) == {"<=10", "11-15", "16-20", "21-25", ">25"}
    assert test2016["bleu_lowercase"] >= MIN_LOWERCASED_TEST2016[model_id]
    if "tatoeba:test" in scores:
        tatoeba = scores["tatoeba:test"]["beam5"]
        assert tatoeba["bleu"] >= MIN_TATOEBA_BLEU[model_id]
        assert tatoeba["multi_reference"]["bleu"] >= tatoeba["bleu"]


@pytest.mark.parametrize("model_id,sentence,expected", [
    ("de-en", "Ein Hund läuft durch den Park.", "dog"),
    ("en-de", "Two men are playing soccer on the beach.", "Männer"),
    ("en-de", "Where is the train station?", "Bahnhof"),  # everyday sentences: Tatoeba in training
])
def test_shipped_model_translates(model_id, sentence, expected):
    model = OnnxSeq2Seq(MODELS / model_id)
    best = SentenceTranslator(model, model.tokenizer).translate([sentence], SearchOptions(beam_size=5))[0][0]
    assert expected in best.text


@pytest.mark.parametrize("model_id,known,foreign", [
    ("de-en", "Zwei Hunde spielen im Schnee.", "Deux chiens jouent dans la neige."),
    ("en-de", "Two men are playing soccer on the beach.", "Je suis fatigué."),
])
def test_shipped_confidence_trusts_known_input_and_distrusts_another_language(model_id, known, foreign):
    model = OnnxSeq2Seq(MODELS / model_id)
    card = model.card
    assert card.confidence["confidence"]["expected_calibration_error"] <= 0.05
    translator = SentenceTranslator(model, model.tokenizer, source_language=card.source_language,
                                    confidence=ConfidenceModel.from_card(card.confidence))
    good, bad = (translator.translate([s], SearchOptions(beam_size=5))[0][0].confidence for s in (known, foreign))
    assert good > 0.5 and bad < 0.1


@pytest.mark.parametrize("model_id,known,foreign,expected", [
    ("de-en", "Wo ist der Bahnhof?", "Je suis fatigué.", "station"),  # everyday German: Tatoeba in training
    ("en-de", "Where is the train station?", "Je suis fatigué.", "Bahnhof"),
])
def test_each_shipped_direction_is_reranked_by_the_other_with_a_confidence_over_the_reranking_signals(
        model_id, known, foreign, expected):
    """Its card's scores (beam5) are for the reranked search; the reranked confidence is calibrated too."""
    from inference.confidence import RERANKED_SIGNALS
    from inference.rerank import reranker_for

    model = OnnxSeq2Seq(MODELS / model_id)
    card = model.card
    reverse_id = f"{card.target_language}-{card.source_language}"
    reranker = reranker_for(card, MODELS / model_id)
    assert card.decoding_defaults.rerank.model == reverse_id and reranker.weight == card.decoding_defaults.rerank.weight
    assert card.decoding_defaults.rerank.fit["reverse_model_sha256"] == read_card(MODELS / reverse_id).sha256
    assert card.confidence["search"]["reranked_by"] == reverse_id
    assert card.confidence["confidence"]["expected_calibration_error"] <= 0.05
    plain, reranked = ConfidenceModel.pair_from_card(card.confidence)
    translator = SentenceTranslator(model, model.tokenizer, source_language=card.source_language, confidence=plain,
                                    reranker=reranker, reranked_confidence=reranked)
    good, bad = (translator.translate([s], SearchOptions(beam_size=5))[0][0] for s in (known, foreign))
    assert good.signals.shape == (len(RERANKED_SIGNALS),) and good.confidence > 0.5 > 0.1 > bad.confidence
    assert expected in good.text
