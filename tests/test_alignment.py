"""Word alignments from attention: grouping pieces into words, aggregating a hand-made attention matrix, and
``return_alignment`` over real HTTP with the tiny model."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from service_helpers import running_service

from service.alignment import align, group_words, word_attention

PHARAOH = re.compile(r"^(\d+-\d+( \d+-\d+)*)?$")

# Source "Ein Fahrrad fährt": words Ein(0) Fahrrad(1) fährt(2); target "A rides bike": A(0) rides(1) bike(2).
SOURCE = ["▁Ein", "▁Fahr", "rad", "▁fährt", "</s>"]
TARGET = ["▁A", "▁rides", "▁bi", "ke", "</s>"]
WEIGHTS = np.array([
    # Ein  Fahr  rad   fährt </s>
    [0.70, 0.10, 0.10, 0.05, 0.05],  # ▁A
    [0.05, 0.05, 0.05, 0.80, 0.05],  # ▁rides
    [0.05, 0.30, 0.25, 0.35, 0.05],  # ▁bi: the single heaviest piece is fährt, the heaviest word Fahrrad (0.55)
    [0.05, 0.20, 0.20, 0.50, 0.05],  # ke: alone it would pick fährt (0.5 > 0.4); averaged with ▁bi, Fahrrad
    [0.00, 0.00, 0.00, 0.10, 0.90],  # </s>: not a word, never linked
], dtype=np.float32)


# ---- pieces to words ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pieces, words, owners", [
    (["▁Ein", "▁Mann", "▁fähr", "t", "▁Fahr", "rad", ".", "</s>"], ["Ein", "Mann", "fährt", "Fahrrad."],
     [0, 1, 2, 2, 3, 3, 3, -1]),
    (["▁5", "<unk>", "▁", "<unk>", "▁f", "ine", "</s>"], ["5⁇", "⁇", "fine"], [0, 0, 1, 1, 2, 2, -1]),
    (["▁", "▁Hund"], ["Hund"], [0, 0]),  # a lone ▁ opens the word the next pieces spell
    (["▁A", "▁", "</s>"], ["A"], [0, 0, -1]),  # a trailing lone ▁ joins the previous word
    ([",", "▁A"], [",", "A"], [0, 1]),  # a target may start without ▁
    (["▁", "</s>"], [], [-1, -1]),
    (["</s>"], [], [-1]),
])
def test_pieces_are_grouped_into_words(pieces, words, owners):
    assert group_words(pieces) == (words, owners)


def test_words_rebuild_the_sentence_the_pieces_spell():
    pieces = ["▁Zwei", "▁Hunde", "▁spiel", "en", "▁im", "▁Schn", "ee", ".", "</s>"]
    words, _ = group_words(pieces)
    assert " ".join(words) == "".join(pieces[:-1]).replace("▁", " ").strip() == "Zwei Hunde spielen im Schnee."


# ---- aggregation and links ------------------------------------------------------------------------------------------

def test_attention_is_summed_over_source_pieces_and_averaged_over_target_pieces():
    source_words, source_owner = group_words(SOURCE)
    target_words, target_owner = group_words(TARGET)
    scores = word_attention(WEIGHTS, source_owner, target_owner, len(source_words), len(target_words))
    assert scores.shape == (3, 3)
    np.testing.assert_allclose(scores, [[0.70, 0.20, 0.05],
                                        [0.05, 0.10, 0.80],
                                        [0.05, 0.475, 0.425]], atol=1e-6)
    assert np.all(scores.sum(axis=1) < 1)  # the mass on </s> is dropped


def test_each_target_word_is_linked_to_its_most_attended_source_word():
    alignment = align(SOURCE, TARGET, WEIGHTS)
    assert alignment.source_words == ["Ein", "Fahrrad", "fährt"]
    assert alignment.target_words == ["A", "rides", "bike"]
    assert alignment.pharaoh == "0-0 1-2 2-1"  # sorted by source index; </s> has no link


def test_a_target_word_attending_mostly_to_end_of_sentence_still_gets_one_link():
    weights = np.array([[0.6, 0.3, 0.1], [0.05, 0.15, 0.8]], dtype=np.float32)
    alignment = align(["▁Hallo", "▁Welt", "</s>"], ["▁Hello", "▁!"], weights)  # hit the length limit: no </s>
    assert alignment.pharaoh == "0-0 1-1"


def test_ties_go_to_the_first_source_word_and_shapes_are_checked():
    assert align(["▁a", "▁b", "</s>"], ["▁x", "</s>"], np.array([[0.4, 0.4, 0.2], [0, 0, 1]])).pharaoh == "0-0"
    assert align(["</s>"], ["▁x", "</s>"], np.array([[1.0], [1.0]])).pharaoh == ""
    with pytest.raises(ValueError, match="shape"):
        align(SOURCE, TARGET, WEIGHTS[:, :-1])


# ---- over HTTP ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(served_models_dir):
    with running_service(served_models_dir) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http


def translate(client: httpx.Client, texts: list[str], **options) -> dict:
    response = client.post("/v1/translate", json={"texts": texts, "source": "de", "target": "en", **options})
    assert response.status_code == 200, response.text
    return response.json()


def check_alignment(sentence: dict) -> list[tuple[int, int]]:
    """Format, indices within the word lists, one link per target word, words rebuilding both sentences."""
    assert PHARAOH.match(sentence["alignment"]), sentence["alignment"]
    links = [tuple(map(int, pair.split("-"))) for pair in sentence["alignment"].split()]
    source_words, target_words = sentence["source_words"], sentence["target_words"]
    assert all(0 <= i < len(source_words) and 0 <= j < len(target_words) for i, j in links)
    assert sorted(j for _, j in links) == list(range(len(target_words)))
    assert links == sorted(links)
    assert " ".join(source_words) == " ".join(sentence["source"].split())
    assert " ".join(target_words).replace("⁇", " ⁇ ").split() == sentence["text"].split()
    return links


def test_return_alignment_adds_word_alignments_per_sentence(client):
    text = "Ein Mann fährt mit dem Fahrrad durch die Stadt. Zwei Hunde spielen im Schnee."
    body = translate(client, [text], return_alignment=True, return_attention=True, return_scores=True,
                     beam_size=3, n_best=2)
    item = body["translations"][0]
    assert len(item["alignment"]) == len(item["attention"]) == len(item["sentences"]) == 2
    for alignment, attention, sentence in zip(item["alignment"], item["attention"], item["sentences"]):
        assert (alignment["source"], alignment["text"]) == (sentence["source"], sentence["text"])  # the best one
        links = check_alignment(alignment)
        # Each link's source word has the highest aggregated attention of its target word (up to the rounding
        # of the returned weights).
        source_words, source_owner = group_words(attention["source_tokens"])
        target_words, target_owner = group_words(attention["target_tokens"])
        assert (source_words, target_words) == (alignment["source_words"], alignment["target_words"])
        scores = word_attention(np.array(attention["weights"]), source_owner, target_owner, len(source_words),
                                len(target_words))
        for i, j in links:
            assert scores[j, i] >= scores[j].max() - 1e-3


def test_alignment_alone_leaves_attention_out_and_is_off_by_default(client):
    alone = translate(client, ["Eine Frau liest ein Buch."], return_alignment=True)["translations"][0]
    assert "attention" not in alone and len(alone["alignment"]) == 1
    check_alignment(alone["alignment"][0])
    plain = translate(client, ["Eine Frau liest ein Buch."])["translations"][0]
    assert "alignment" not in plain
    libre = client.post("/translate", json={"q": "Eine Frau liest ein Buch.", "source": "de", "target": "en"})
    assert set(libre.json()) == {"translatedText"}  # the LibreTranslate API is unchanged


def test_html_texts_align_every_text_node_sentence(client):
    item = translate(client, ["<p>Ein Hund rennt.</p><p>Eine <b>Katze</b> schläft.</p>"], format="html",
                     return_alignment=True)["translations"][0]
    assert [a["source"] for a in item["alignment"]] == ["Ein Hund rennt.", "Eine", "Katze", "schläft."]
    for alignment in item["alignment"]:
        check_alignment(alignment)


@pytest.mark.parametrize("value", [1, "true", None])
def test_return_alignment_must_be_a_boolean(client, value):
    response = client.post("/v1/translate", json={"texts": ["Hallo."], "source": "de", "target": "en",
                                                  "return_alignment": value})
    assert response.status_code == 400 and "return_alignment" in response.json()["error"]
