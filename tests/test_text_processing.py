"""Sentence splitting, HTML handling and language identification (no model needed)."""

from __future__ import annotations

import importlib.util
import random

import pytest
from conftest import REPO, multi30k_mirror

from inference.language_id import LanguageDetector
from service import htmltext
from service.segmenter import join, segment, sentences


@pytest.mark.parametrize("text, language, expected", [
    ("Ein Hund rennt. Eine Katze schläft!", "de", ["Ein Hund rennt.", "Eine Katze schläft!"]),
    ("Dr. Müller kommt am 3. Oktober. Er bleibt.", "de", ["Dr. Müller kommt am 3. Oktober.", "Er bleibt."]),
    ("Das ist z. B. gut. Ja.", "de", ["Das ist z. B. gut.", "Ja."]),
    ("Mr. Smith met J. R. R. Tolkien. They talked.", "en", ["Mr. Smith met J. R. R. Tolkien.", "They talked."]),
    ('He said: "Stop." Then he left.', "en", ['He said: "Stop."', "Then he left."]),
    ("Is it? yes it is.", "en", ["Is it? yes it is."]),  # no capital after the mark: not a boundary
    ("Line one\nLine two", "en", ["Line one", "Line two"]),
    ("Version 2.0 is out. Get it.", "en", ["Version 2.0 is out.", "Get it."]),
])
def test_sentences_are_split_where_a_reader_would(text, language, expected):
    assert sentences(segment(text, language)) == expected


def test_segments_always_rejoin_to_the_input():
    rng = random.Random(0)
    words = ["Ein", "Hund.", "rennt!", "Dr.", "3.", "z.", "B.", "\n", "\n\n", "  ", "\t", "é", "Über?", "42", "…",
             "a"]
    for _ in range(300):
        text = "".join(rng.choice(words) + rng.choice(["", " ", "  ", "\n"]) for _ in range(rng.randint(0, 12)))
        pieces = segment(text, rng.choice(["de", "en", None]), max_sentence_chars=20)
        assert "".join(p.text for p in pieces) == text
        assert join(pieces, [p.text for p in pieces if p.translate]) == text
        for piece in pieces:
            if piece.translate:
                assert piece.text == piece.text.strip() and "\n" not in piece.text
                assert any(c.isalpha() for c in piece.text)


@pytest.mark.parametrize("run", [".", " ", ". ", "Dr. A ", '."', "(", "!?", " \n"])
def test_splitting_pathological_runs_is_linear(run):
    """Runs of punctuation or spaces once made the splitter backtrack quadratically (5,000 dots: 0.3 s,
    200,000: minutes). Not a speed benchmark: a hang guard with a bound ~100x above the linear cost."""
    import time

    text = "Ein Satz. " + run * (200_000 // len(run)) + "Noch einer."
    started = time.process_time()
    pieces = segment(text, "de")
    assert time.process_time() - started < 5.0
    assert "".join(p.text for p in pieces) == text


def test_blank_and_letterless_texts_need_no_translation():
    for text in ["", "   ", "\n\n", "42", "...", " - 3,5 % "]:
        assert sentences(segment(text)) == []


def test_overlong_sentences_are_cut_at_spaces_preferably_after_commas():
    text = ("Ein Mann, der einen Hut trägt, " * 10).strip()
    pieces = sentences(segment(text, "de", max_sentence_chars=100))
    assert len(pieces) > 1 and all(len(p) <= 100 for p in pieces)
    assert all(p.endswith(",") or p == pieces[-1] for p in pieces)


def test_html_text_nodes_are_translated_and_markup_is_kept():
    document = htmltext.parse('<p class="a" data-x=\'1"2\'>Hallo <b>Welt</b>!<br>Neu &amp; alt</p>')
    assert document.texts == ["Hallo ", "Welt", "!", "Neu & alt"]
    out = document.render(["Hello ", "world", "!", "New & old"])
    assert out == '<p class="a" data-x="1&quot;2">Hello <b>world</b>!<br>New &amp; old</p>'


def test_html_translations_are_escaped_so_they_cannot_become_markup():
    document = htmltext.parse("<div>&lt;img src=x onerror=alert(1)&gt;</div>")
    assert document.texts == ["<img src=x onerror=alert(1)>"]
    out = document.render(['<img src=x onerror=alert(1)><script>alert(2)</script>'])
    assert "<img" not in out and "<script" not in out
    assert out == "<div>&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;</div>"


def test_html_code_scripts_and_opt_outs_are_not_translated():
    markup = ('<script>if (a < b) { x = "<p>Hund</p>"; }</script><style>p > b { color: red }</style>'
              '<pre>Hund</pre><span translate="no">Hund</span><i class="x notranslate">Hund</i><p>Katze</p>')
    document = htmltext.parse(markup)
    assert document.texts == ["Katze"]
    assert document.render(["Cat"]) == markup.replace("Katze", "Cat")


BROWSER_CASES = [
    '<a href="/p?id=1&section=2&amp;x=1&copy 2&copy=3&#38;y&lt;z">Seite &sect; eins</a>',
    '<img alt="A &amp B" src="x.png?a=1&b=2"><p title="&notit; &notin; &not">Text</p>',
    '<p>Ein Hund.<script/>var s = "<b>Hallo</b>";</script> Ende.</p>',
    '<style/>p > b { content: "Hund" }</style><p>Katze</p>',
    '<textarea/>Nicht übersetzen</textarea><p>Übersetzen</p>',
    '<p><span translate="no"/>Eigenname</span> und Text.</p>',
    '<svg><circle r="1"/><text>x</text></svg><p>Nach dem Bild</p>',
    '<p>Zeile<br/>zwei</p>',
]


@pytest.mark.parametrize("markup", BROWSER_CASES)
def test_html_output_means_to_a_browser_what_the_input_meant(markup):
    """html5lib (a browser-grade HTML5 parser) builds the same tree from our output as from the input, so
    attribute values (URLs) survive and self-closed non-void elements are opened, as browsers open them."""
    html5lib = pytest.importorskip("html5lib")

    def tree(text: str) -> str:
        return html5lib.serialize(html5lib.parseFragment(text, treebuilder="etree"), tree="etree",
                                  quote_attr_values="always", omit_optional_tags=False)

    document = htmltext.parse(markup)
    assert tree(document.render(document.texts)) == tree(markup)


@pytest.mark.parametrize("markup, untranslated", [
    ('<p>Ein Hund.<script/>var s = "Hallo";</script></p>', 'var s = "Hallo";'),
    ("<textarea/>Nicht übersetzen</textarea><p>Übersetzen</p>", "Nicht übersetzen"),
    ('<p><span translate="no"/>Eigenname</span> und Text.</p>', "Eigenname"),
])
def test_self_closed_opt_outs_stay_untranslated(markup, untranslated):
    document = htmltext.parse(markup)
    assert untranslated not in document.texts and document.texts
    assert untranslated in document.render([t.upper() for t in document.texts])


def test_html_tolerates_broken_markup():
    document = htmltext.parse("<p>Ein <b>Hund</p> rennt </i> 5 < 6")
    assert document.render([t.upper() for t in document.texts]) == "<p>EIN <b>HUND</p> RENNT </i> 5 &lt; 6"


def test_language_detection_picks_among_the_candidates():
    detector = LanguageDetector(["de", "en", "fr"])
    assert detector.detect("Ein kleiner Junge spielt im Garten.").language == "de"
    assert detector.detect("Un petit garçon joue dans le jardin.").language == "fr"
    ranked = detector.rank("A little boy plays in the garden.", ["de", "en"])
    assert [d.language for d in ranked] == ["en", "de"]
    assert sum(d.confidence for d in ranked) == pytest.approx(1.0, abs=1e-4)
    assert detector.rank("irrelevant", ["de"]) == [type(ranked[0])("de", 1.0)]
    with pytest.raises(ValueError):
        LanguageDetector(["de", "tlh"])


def test_language_identification_accuracy_on_multi30k_test2016(capsys):
    mirror = multi30k_mirror()
    if mirror is None:
        pytest.skip("no Multi30k mirror")
    spec = importlib.util.spec_from_file_location("langid_accuracy", REPO / "scripts" / "langid_accuracy.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    full = script.evaluate(mirror, ["de", "en", "fr"])
    short = script.evaluate(mirror, ["de", "en", "fr"], words=3)
    with capsys.disabled():
        print(f"\nlanguage ID on test2016 (de/en/fr, {full['sentences']} sentences): "
              f"{full['accuracy']:.4f} full sentences, {short['accuracy']:.4f} first 3 words")
    assert full["accuracy"] >= 0.99
    assert short["accuracy"] >= 0.95
