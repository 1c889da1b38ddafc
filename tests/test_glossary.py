"""Glossaries and do-not-translate terms: matching rules, replacement on hand-made alignments, limits, sentence
splitting, and ``glossary`` / ``do_not_translate`` over real HTTP with the tiny model."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from service_helpers import running_service

from service.alignment import WordAlignment
from service.glossary import (
    MAX_TERM_CHARS,
    MAX_TERMS,
    PLACEHOLDER,
    GlossaryError,
    Occurrence,
    Term,
    apply,
    find,
    mask,
    only_verbatim,
    terms_of,
)
from service.segmenter import keep_together, segment

# ---- matching -------------------------------------------------------------------------------------------------------


def found(sentence: str, terms: tuple[Term, ...], language: str | None = "de") -> list[str]:
    return [sentence[o.start : o.end] for o in find(sentence, terms, language)]


def test_matching_ignores_case_and_needs_word_boundaries():
    terms = (Term("hund", "hound"),)
    assert found("Der HUND und der Hund.", terms) == ["HUND", "Hund"]
    assert found("Eine Hundehütte und ein Seehund.", terms) == []


def test_multi_word_terms_match_across_any_whitespace():
    assert found("Er fährt ein  rotes\tAuto.", (Term("rotes Auto", "red car"),)) == ["rotes\tAuto"]
    assert found("Er fährt ein rotes Fahrzeug.", (Term("rotes Auto", "red car"),)) == []


@pytest.mark.parametrize("language, sentence, expected", [
    ("de", "Zwei Hunde und drei Hunden.", ["Hunde", "Hunden"]),
    ("en", "Two dogs and one dog.", ["dogs", "dog"]),
    ("en", "A doggy.", []),  # only the listed suffixes
    ("fr", "Deux Hunde.", []),  # no suffixes for a language without a list
])
def test_glossary_terms_match_inflected_forms_of_their_last_word(language, sentence, expected):
    term = Term("dog" if language == "en" else "Hund", "hound")
    assert found(sentence, (term,), language) == expected


def test_do_not_translate_spans_and_short_words_match_exactly():
    assert found("Hallo {user} und {users}.", (Term("{user}", None),)) == ["{user}"]
    assert found("Ein Ei, zwei Eier.", (Term("Ei", "egg"),)) == ["Ei"]  # under MIN_STEM letters: no suffix
    assert found("Preis: %s Euro, %sx.", (Term("%s", None),)) == ["%s"]


def test_overlapping_entries_are_resolved_longest_first():
    terms = (Term("New York", "NY"), Term("York City", "YC"), Term("New York City", "NYC"), Term("City", "C"))
    assert found("In New York City und York.", terms, "en") == ["New York City"]
    assert found("New York und York City.", terms, "en") == ["New York", "York City"]


def test_an_entry_for_the_inflected_form_wins_over_the_stem():
    terms = (Term("Hund", "hound"), Term("Hunde", "hounds"))
    assert [o.target for o in find("Zwei Hunde und ein Hund.", terms, "de")] == ["hounds", "hound"]


def test_terms_are_validated_with_clear_messages():
    assert terms_of({"Hund": " hound "}, ["{user}"]) == (Term("Hund", "hound"), Term("{user}", None))
    assert terms_of(None, None) == ()
    with pytest.raises(GlossaryError, match=f"at most {MAX_TERMS}"):
        terms_of({f"w{i}": "x" for i in range(MAX_TERMS)}, ["{user}"])
    with pytest.raises(GlossaryError, match="empty"):
        terms_of({"Hund": " "}, None)
    with pytest.raises(GlossaryError, match="do_not_translate entry 1 is empty"):
        terms_of(None, ["ok", ""])
    with pytest.raises(GlossaryError, match=f"at most {MAX_TERM_CHARS}"):
        terms_of({"x" * (MAX_TERM_CHARS + 1): "y"}, None)


# ---- replacement -----------------------------------------------------------------------------------------------------

SOURCE = "Ein Mann fährt Fahrrad."
# A(0) man(1) rides(2) a(3) bike.(4); "A" looks at the noun it introduces, as the models' attention does.
ALIGNMENT = WordAlignment(SOURCE.split(), ["A", "man", "rides", "a", "bike."], [(1, 0), (1, 1), (2, 2), (3, 3),
                                                                                 (3, 4)])


def replaced(terms: tuple[Term, ...], alignment: WordAlignment = ALIGNMENT, scores=None, sentence: str = SOURCE) -> str:
    return apply(sentence, find(sentence, terms, "de"), alignment, "en", scores)


def test_the_aligned_words_are_replaced_keeping_articles_and_punctuation():
    assert replaced((Term("Fahrrad", "bicycle"),)) == "A man rides a bicycle."
    assert replaced((Term("Mann", "guy"), Term("Fahrrad", "automobile"))) == "A guy rides an automobile."
    assert replaced((Term("Mann fährt", "person cycles"),)) == "A person cycles a bike."


def test_a_replaced_first_word_keeps_the_capital_letter_but_a_verbatim_span_does_not():
    alignment = WordAlignment(["Leute", "reparieren."], ["People", "repair."], [(0, 0), (1, 1)])
    assert replaced((Term("Leute", "folks"),), alignment, sentence="Leute reparieren.") == "Folks repair."
    assert replaced((Term("Leute", None),), alignment, sentence="Leute reparieren.") == "Leute repair."


def test_an_unaligned_term_is_inserted_after_the_preceding_words_translation():
    alignment = WordAlignment(SOURCE.split(), ["A", "man", "rides."], [(1, 0), (1, 1), (2, 2)])
    assert replaced((Term("Fahrrad", "bicycle"),), alignment) == "A man rides bicycle."
    start = WordAlignment(["{user}", "kommt."], ["Comes."], [(1, 0)])
    assert replaced((Term("{user}", None),), start, sentence="{user} kommt.") == "{user} Comes."


def test_an_unaligned_term_replaces_the_word_attending_to_it_most_when_that_is_strong():
    alignment = WordAlignment(SOURCE.split(), ["A", "man", "rides", "wheels."], [(1, 0), (1, 1), (2, 2), (2, 3)])
    scores = np.zeros((4, 4))
    scores[3, 3] = 0.4  # "wheels." is linked to "fährt" but attends to "Fahrrad" too
    scores[3, 2] = 0.6
    assert replaced((Term("Fahrrad", "bicycle"),), alignment, scores) == "A man rides bicycle."
    scores[3, 3], scores[3, 2] = 0.1, 0.9
    assert replaced((Term("Fahrrad", "bicycle"),), alignment, scores) == "A man rides wheels bicycle."


def test_a_term_beyond_what_the_model_read_is_inserted_at_the_end():
    alignment = WordAlignment(["Ein", "Mann"], ["A", "man"], [(1, 0), (1, 1)])  # the source was truncated
    scores = np.array([[0.1, 0.9], [0.0, 1.0]])
    assert replaced((Term("Fahrrad", "bicycle"),), alignment, scores) == "A man bicycle"


def test_a_term_the_model_already_used_is_left_alone():
    alignment = WordAlignment(SOURCE.split(), ["A", "bike", "man", "rides."], [(1, 0), (1, 2), (2, 3), (3, 1)])
    assert replaced((Term("Mann", "man"),), alignment) == "A bike man rides."
    assert replaced((Term("Fahrrad", "bike"),), alignment) == "A bike man rides."


def test_the_model_reads_a_placeholder_for_each_do_not_translate_span():
    sentence = "Hallo {user}, der Hund und XR-200."
    occurrences = find(sentence, (Term("{user}", None), Term("Hund", "hound"), Term("XR-200", None)), "de")
    masked, moved = mask(sentence, occurrences)
    assert masked == f"Hallo {PLACEHOLDER}, der Hund und {PLACEHOLDER}."
    assert [masked[o.start : o.end] for o in moved] == [PLACEHOLDER, "Hund", PLACEHOLDER]
    assert [o.target for o in moved] == ["{user}", "hound", "XR-200"]
    assert mask(sentence, [Occurrence(10, 14, "hound")]) == (sentence, [Occurrence(10, 14, "hound")])


def test_a_sentence_of_nothing_but_do_not_translate_spans_is_recognised():
    terms = (Term("{user}", None), Term("%s", None), Term("Hund", "hound"))
    assert only_verbatim("{user}, %s!", find("{user}, %s!", terms, "de"))
    assert not only_verbatim("{user} Hund", find("{user} Hund", terms, "de"))
    assert not only_verbatim("Hund.", find("Hund.", terms, "de"))


def test_sentence_splitting_never_cuts_through_a_term():
    text = "Er arbeitet bei ACME Inc. Berlin seit Jahren. Dann geht er."
    start = text.index("ACME")
    pieces = segment(text, "de")
    assert "ACME Inc. Berlin" not in [p.text for p in pieces if p.translate]  # the splitter alone would cut it
    kept = keep_together(pieces, [(start, start + len("ACME Inc. Berlin"))])
    assert [p.text for p in kept if p.translate] == ["Er arbeitet bei ACME Inc. Berlin seit Jahren.", "Dann geht er."]
    assert "".join(p.text for p in kept) == text


# ---- over HTTP, with the tiny model ----------------------------------------------------------------------------------

SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau sitzt auf einer Bank."]
GLOSSARY = {"Mann": "zebra", "Hund": "hound", "Frau": "astronaut"}  # words the tiny model never says


@pytest.fixture(scope="module")
def url(served_models_dir):
    with running_service(served_models_dir) as base:
        yield base


def translate(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/translate", json={"source": "de", "target": "en", **body}, timeout=60)


def texts(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [t["text"] for t in response.json()["translations"]]


def test_the_glossary_term_appears_in_the_translation(url):
    plain = texts(translate(url, texts=SENTENCES))
    forced = texts(translate(url, texts=SENTENCES, glossary=GLOSSARY))
    for source, before, after in zip(SENTENCES, plain, forced):
        term = next(t for s, t in GLOSSARY.items() if s in source)
        assert term not in before.lower()
        assert re.search(rf"\b{term}\b", after, re.IGNORECASE), (source, after)


def test_do_not_translate_spans_survive_verbatim(url):
    spans = ["{user}", "%s", "XR-200", "ACME Inc. Berlin"]
    sources = ["Hallo {user}, ein Mann fährt Fahrrad.", "Eine Frau %s sitzt auf einer Bank.",
               "Zwei Hunde spielen mit dem XR-200 im Schnee.", "Ein Mann arbeitet bei ACME Inc. Berlin im Park."]
    response = translate(url, texts=sources, do_not_translate=spans, return_scores=True)
    for source, text in zip(sources, texts(response)):
        span = next(s for s in spans if s in source)
        assert span in text, (source, text)
    assert len(response.json()["translations"][3]["sentences"]) == 1  # not split at "Inc."
    read = translate(url, texts=sources[:1], do_not_translate=spans, return_attention=True).json()
    read_pieces = "".join(read["translations"][0]["attention"][0]["source_tokens"])
    assert "user" not in read_pieces and "Hallo" in read_pieces  # the model read the placeholder, not {user}


def test_html_text_nodes_holding_only_a_span_are_copied(url):
    html = "<p>Ein Mann, <b>{user}</b>, fährt Fahrrad.</p>"
    text = texts(translate(url, texts=[html], format="html", do_not_translate=["{user}"]))[0]
    assert "<b>{user}</b>" in text, text


def test_alternatives_carry_the_terms_too(url):
    body = {"texts": ["Hallo {user}, ein Mann fährt Fahrrad."], "beam_size": 3, "n_best": 3,
            "glossary": {"Mann": "zebra"}, "do_not_translate": ["{user}"]}
    for _ in range(2):  # decoded, then (with a cache) from the cache
        item = translate(url, **body).json()["translations"][0]
        assert item["alternatives"]
        for text in [item["text"]] + [a["text"] for a in item["alternatives"]]:
            assert "{user}" in text and "zebra" in text.lower(), text


def test_with_the_cache_a_glossary_never_gets_an_entry_without_attention_for_its_alternatives(served_models_dir):
    body = {"texts": ["Ein Mann fährt Fahrrad."], "beam_size": 3, "n_best": 3}
    with running_service(served_models_dir, cache_size=64) as base:
        plain = translate(base, **body, return_attention=True).json()["translations"][0]  # cached: best's only
        for _ in range(2):
            item = translate(base, **body, glossary={"Mann": "zebra"}).json()["translations"][0]
            assert item["alternatives"] and all("zebra" in a["text"].lower() for a in item["alternatives"]), item
        again = translate(base, **body, return_attention=True).json()["translations"][0]
    assert again == plain  # the cache's answer for the plain request is unchanged


def test_without_a_matching_term_the_output_is_unchanged(url):
    body = {"texts": SENTENCES, "beam_size": 2, "n_best": 2, "return_scores": True}
    plain = translate(url, **body).json()["translations"]
    unmatched = translate(url, **body, glossary={"Zeppelin": "airship"}, do_not_translate=["{nobody}"])
    assert unmatched.json()["translations"] == plain


def test_attention_and_alignment_describe_the_model_output_before_replacement(url):
    plain = translate(url, texts=SENTENCES[:1], return_alignment=True).json()["translations"][0]
    forced = translate(url, texts=SENTENCES[:1], glossary=GLOSSARY, return_alignment=True,
                       return_attention=True).json()["translations"][0]
    assert "zebra" in forced["text"].lower() and "zebra" not in plain["text"].lower()
    assert forced["alignment"] == plain["alignment"]
    assert forced["attention"][0]["text"] == plain["text"]


@pytest.mark.parametrize("fields, message", [
    ({"glossary": {f"w{i}": "x" for i in range(MAX_TERMS + 1)}}, "at most 100"),
    ({"glossary": {"Hund": "x"}, "do_not_translate": [f"s{i}" for i in range(MAX_TERMS)]}, "at most 100"),
    ({"glossary": {"Hund": ""}}, "is empty"),
    ({"do_not_translate": ["   "]}, "is empty"),
    ({"glossary": {"Hund": "x" * (MAX_TERM_CHARS + 1)}}, f"at most {MAX_TERM_CHARS}"),
    ({"glossary": {"Hund": 5}}, ""),
    ({"do_not_translate": "{user}"}, ""),
])
def test_bad_glossaries_are_a_clear_400(url, fields, message):
    response = translate(url, texts=SENTENCES[:1], **fields)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_every_occurrence_lands_in_the_output_whatever_the_alignment():
    """Random sentences, terms and alignments (seeded): each term's target text is in the result."""
    rng = np.random.default_rng(13)
    vocabulary = ["Hund", "Mann", "{user}", "%s", "XR-200", "läuft.", "der", "ein,", "Park", "A", "the"]
    for _ in range(300):
        sentence = " ".join(rng.choice(vocabulary, size=rng.integers(1, 9)))
        terms = (Term("Hund", "hound"), Term("Mann", "zebra"), Term("{user}", None), Term("%s", None))
        occurrences = find(sentence, terms, "de")
        source_words = sentence.split()[: rng.integers(1, len(sentence.split()) + 1)]  # maybe truncated
        target_words = list(rng.choice(["a", "dog", "the", "runs.", "man,", "X"], size=rng.integers(1, 9)))
        links = sorted((int(rng.integers(len(source_words))), j) for j in range(len(target_words)))
        scores = rng.random((len(target_words), len(source_words)))
        result = apply(sentence, occurrences, WordAlignment(source_words, target_words, links), "en", scores)
        for occurrence in occurrences:
            wanted, got = (occurrence.target, result) if occurrence.verbatim else (occurrence.target, result.lower())
            assert wanted in got, (sentence, target_words, links, result)
