"""The models committed under models/: complete, verified, within budget, and translating."""

import pytest

from service.decoding import SearchOptions
from service.model_card import read_card, verify_files
from service.onnx_model import OnnxSeq2Seq
from service.pipeline import SentenceTranslator
from tests.conftest import MODELS

SHIPPED = ["de-en", "en-de"]
MIN_LOWERCASED_BLEU = {"de-en": 38.0, "en-de": 36.0}  # test2016, beam search (the training issue's bar)


@pytest.mark.parametrize("model_id", SHIPPED)
def test_model_card_is_complete_and_files_verify(model_id):
    model_dir = MODELS / model_id
    card = read_card(model_dir)
    verify_files(model_dir, card)
    src, tgt = model_id.split("-")
    assert (card["id"], card["source_language"], card["target_language"]) == (model_id, src, tgt)
    arch = card["architecture"]
    assert arch["cell"] in {"rnn", "gru", "lstm"} and arch["attention"] != "none"
    assert 0 < arch["parameters"] <= 10_000_000
    assert sum((model_dir / f).stat().st_size for f in card["sha256"]) <= 45 * 2**20
    vocab = card["vocabulary"]
    assert (vocab["pad_id"], vocab["unk_id"], vocab["bos_id"], vocab["eos_id"]) == (0, 1, 2, 3)
    assert card["graphs"]["decoder"]["outputs"] == ["log_probs", "new_state", "attention"]
    assert "non-commercial" in card["training"]["licence"]
    parity = card["parity"]
    assert parity["max_abs_logprob_diff"] <= 1e-4 and parity["greedy_identical"] == parity["sentences"] == 1014


@pytest.mark.parametrize("model_id", SHIPPED)
def test_model_card_scores_carry_signatures_and_meet_the_bar(model_id):
    scores = read_card(MODELS / model_id)["scores"]
    for split in ("val", "test2016"):
        for search in ("greedy", "beam5"):
            entry = scores[split][search]
            assert entry["signatures"]["bleu"].startswith("nrefs:1|case:mixed")
            assert "case:lc" in entry["signatures"]["bleu_lowercase"]
            assert entry["bleu_lowercase"] >= entry["bleu"] > 0
    assert set(scores["test2016"]["beam5"]["bleu_by_source_length"]) == {"<=10", "11-15", "16-20", "21-25", ">25"}
    assert scores["test2016"]["beam5"]["bleu_lowercase"] >= MIN_LOWERCASED_BLEU[model_id]


@pytest.mark.parametrize("model_id,sentence,expected", [
    ("de-en", "Ein Hund läuft durch den Park.", "dog"),
    ("en-de", "Two men are playing soccer on the beach.", "Männer"),
])
def test_shipped_model_translates(model_id, sentence, expected):
    model = OnnxSeq2Seq(MODELS / model_id)
    best = SentenceTranslator(model, model.tokenizer).translate([sentence], SearchOptions(beam_size=5))[0][0]
    assert expected in best.text
