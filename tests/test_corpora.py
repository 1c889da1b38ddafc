"""Training on any corpus: every format read, every bad input named by file and line, the split recipe,
and a tiny corpus in each format trained, exported, served and translated end to end."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO
from tests.service_helpers import running_service
from training.cleaning import CleaningRules, clean
from training.config import load_config
from training.corpus_config import ConfigError, parse_sources
from training.corpus_readers import CorpusError, RawPair, read_delimited, read_jsonl, read_moses, read_tmx
from training.datasets import prepare_data, read_corpus
from training.splits import carve, sentence_groups

PAIRS = [("Ein Hund rennt.", "A dog runs."), ("Zwei Männer & ein \"Kind\".", "Two men, a child."),
         ("Hallo!", "Hi.")]


def write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tmx_text(pairs: list[tuple[str, str]], src: str = "de", tgt: str = "en") -> str:
    from xml.sax.saxutils import escape

    units = "".join(f'<tu><tuv xml:lang="{src}-DE"><seg>{escape(s)}</seg></tuv>'
                    f'<tuv xml:lang="{tgt}"><seg>{escape(t)}</seg></tuv></tu>\n' for s, t in pairs)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<tmx version="1.4"><header srclang="{src}"/><body>\n{units}</body></tmx>\n'


def write_corpus(fmt: str, folder: Path, pairs: list[tuple[str, str]], gz: bool = False) -> dict:
    """``pairs`` in ``fmt`` under ``folder``; returns the corpus entry of a config that reads them."""
    suffix = ".gz" if gz else ""
    if fmt == "tsv":
        path = write(folder / f"c.tsv{suffix}", "".join(f"{s}\t{t}\n" for s, t in pairs), gz)
        return {"format": "tsv", "path": str(path), "columns": {"de": 0, "en": 1}}
    if fmt == "csv":
        import csv
        import io

        body = io.StringIO()
        csv.writer(body, lineterminator="\n").writerows([("german", "english"), *pairs])
        path = write(folder / f"c.csv{suffix}", body.getvalue(), gz)
        return {"format": "csv", "path": str(path), "header": True, "columns": {"de": "german", "en": "english"}}
    if fmt == "moses":
        de = write(folder / f"c.de{suffix}", "".join(s + "\n" for s, _ in pairs), gz)
        en = write(folder / f"c.en{suffix}", "".join(t + "\n" for _, t in pairs), gz)
        return {"format": "moses", "paths": {"de": str(de), "en": str(en)}}
    if fmt == "jsonl":
        lines = "".join(json.dumps({"de": s, "en": t, "id": i}, ensure_ascii=False) + "\n" for i, (s, t) in enumerate(pairs))
        return {"format": "jsonl", "path": str(write(folder / f"c.jsonl{suffix}", lines, gz))}
    path = write(folder / f"c.tmx{suffix}", tmx_text(pairs), gz)
    return {"format": "tmx", "path": str(path)}


def read_all(entry: dict, src: str = "de", tgt: str = "en") -> list[RawPair]:
    sources = parse_sources({"corpora": [{"name": "c", **entry, "held_out": {"valid": 1}}]}, src, tgt)
    return list(read_corpus(sources.corpora[0], src, tgt))


@pytest.mark.parametrize("fmt", ["tsv", "csv", "moses", "jsonl", "tmx"])
@pytest.mark.parametrize("gz", [False, True])
def test_every_format_reads_the_same_pairs(fmt, gz, tmp_path):
    pairs = read_all(write_corpus(fmt, tmp_path, PAIRS, gz))
    assert [(p.source, p.target) for p in pairs] == PAIRS
    assert all(":" in p.location for p in pairs)


def test_en_de_reads_the_columns_the_other_way_round(tmp_path):
    pairs = read_all(write_corpus("tsv", tmp_path, PAIRS), "en", "de")
    assert (pairs[0].source, pairs[0].target) == ("A dog runs.", "Ein Hund rennt.")


def test_tmx_segments_keep_text_runs_and_drop_markup_codes(tmp_path):
    path = write(tmp_path / "m.tmx", '<tmx version="1.4"><body><tu>'
                 '<tuv lang="DE"><seg>Klicken Sie <bpt i="1">&lt;b&gt;</bpt>hier<ept i="1">&lt;/b&gt;</ept>.</seg></tuv>'
                 '<tuv xml:lang="en-GB"><seg>Click <hi>here</hi>.</seg></tuv></tu></body></tmx>')
    [pair] = read_tmx(path, "de", "en")
    assert (pair.source, pair.target) == ("Klicken Sie hier.", "Click here.")


# --- bad input: one message naming the file and the line --------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match=r"nope\.tsv: file not found"):
        list(read_delimited(tmp_path / "nope.tsv", 0, 1, "\t", False))


def test_ragged_tsv_row_names_its_line(tmp_path):
    path = write(tmp_path / "r.tsv", "a\tb\nc\td\ne\n")
    with pytest.raises(CorpusError, match=r"r\.tsv:3: ragged row: 1 fields, expected 2"):
        list(read_delimited(path, 0, 1, "\t", False))


def test_moses_pair_with_different_line_counts(tmp_path):
    de, en = write(tmp_path / "m.de", "a\nb\nc\n"), write(tmp_path / "m.en", "x\ny\n")
    with pytest.raises(CorpusError, match=r"m\.en:3: Moses pair differs in line count: .*3 lines.* 2"):
        list(read_moses(de, en))


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "bad.tsv.gz"
    path.write_bytes(gzip.compress("gut\tgood\n".encode() + b"schlecht \xff\tbad\n"))
    with pytest.raises(CorpusError, match=r"bad\.tsv\.gz:2: invalid UTF-8"):
        list(read_delimited(path, 0, 1, "\t", False))


def test_unreadable_tmx_names_its_line(tmp_path):
    path = write(tmp_path / "broken.tmx", '<tmx>\n<body>\n<tu><tuv xml:lang="de"><seg>a</tuv>\n</body></tmx>')
    with pytest.raises(CorpusError, match=r"broken\.tmx:3: unreadable TMX"):
        list(read_tmx(path, "de", "en"))


def test_tmx_entity_expansion_is_refused(tmp_path):
    bomb = ('<?xml version="1.0"?><!DOCTYPE tmx [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            '<tmx><body><tu><tuv xml:lang="de"><seg>&b;</seg></tuv><tuv xml:lang="en"><seg>x</seg></tuv></tu>'
            '</body></tmx>')
    with pytest.raises(CorpusError, match=r"bomb\.tmx: refused unsafe XML"):
        list(read_tmx(write(tmp_path / "bomb.tmx", bomb), "de", "en"))


def test_tmx_in_other_languages(tmp_path):
    path = write(tmp_path / "fr.tmx", tmx_text(PAIRS, "fr", "en"))
    with pytest.raises(CorpusError, match=r"fr\.tmx: TMX has languages \['en', 'fr'\], the config needs de and en"):
        list(read_tmx(path, "de", "en"))


def test_jsonl_without_the_language_key(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"de": "a", "en": "b"}\n{"de": "c", "fr": "d"}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: no key 'en'"):
        list(read_jsonl(path, "de", "en"))


def test_corpus_empty_after_cleaning(tmp_path):
    entry = write_corpus("tsv", tmp_path, [("@@", "@@"), ("", "x")])
    sources = parse_sources({"corpora": [{"name": "junk", **entry, "held_out": {"valid": 1}}]}, "de", "en")
    with pytest.raises(CorpusError, match="corpus 'junk': no training pair left after cleaning"):
        prepare_data(sources, "de", "en", CleaningRules())


@pytest.mark.parametrize("data, message", [
    ({"corpora": [{"name": "c", "format": "tsv", "path": "x", "columns": {"de": 0, "fr": 1}}], "valid": ["c:v"]},
     r"data.corpora\[c\].columns: no column for \['en'\]"),
    ({"corpora": [{"name": "c", "format": "xml", "path": "x"}]}, r"format: 'xml' is not one of"),
    ({"corpora": [{"name": "c", "format": "tsv", "path": "x", "columns": {"de": 0, "en": 1}}], "valid": ["c"]},
     "used whole for evaluation and also for training"),
    ({"corpora": [{"name": "c", "format": "tsv", "path": "x", "columns": {"de": 0, "en": 1},
                   "held_out": {"valid": 10}}], "valid": ["c:test"]}, r"has no part 'test'"),
    ({"corpora": [{"name": "m", "preset": "multi30k"}], "valid": ["m:val"], "test": ["m"]}, "name a split of preset"),
])
def test_config_mistakes_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_sources(data, "de", "en")


def test_unknown_language_code_at_config_time(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "source": "xx", "target": "en"}))
    with pytest.raises(ConfigError, match=r"source: 'xx' is not an ISO 639-1 code the service can name"):
        load_config(config)


def test_prepare_reports_bad_input_in_one_line_before_training(tmp_path):
    entry = write_corpus("tsv", tmp_path, PAIRS)
    write(Path(entry["path"]), "a\tb\nc\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "source": "de", "target": "en", "data": {
        "corpora": [{"name": "c", **entry, "held_out": {"valid": 1}}], "valid": ["c:valid"]}}))
    for module in ("training.prepare", "training.train"):
        result = subprocess.run([sys.executable, "-m", module, "--config", str(config), "--run-dir" if module ==
                                 "training.train" else "--data-dir", str(tmp_path / "out")],
                                capture_output=True, text=True, cwd=REPO, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"error: {entry['path']}:2: ragged row: 1 fields, expected 2 like line 1"
        assert "Traceback" not in result.stderr


# --- cleaning and the split recipe ---------------------------------------------------------------------------

def test_cleaning_counts_every_rule_with_examples():
    raw = [RawPair(f"f:{i}", s, t) for i, (s, t) in enumerate([
        ("Ein Hund.", "A dog."), ("Ein Hund.", "A dog."), ("", "x"), ("@@", "@@"), ("wort " * 90, "word"),
        ("Ein sehr langer Satz mit vielen Wörtern.", "Yes."), ("Tom &amp; Maria\u00a0 gehen.", "Tom and Mary go."),
        ("Le chat est assis sur le tapis dans la cuisine.", "The cat sits on the mat in the kitchen."),
    ], start=1)]
    kept, report = clean(raw, "de", "en", CleaningRules(language_id=True))
    assert kept == [("Ein Hund.", "A dog."), ("Tom & Maria gehen.", "Tom and Mary go.")]
    assert dict(report.dropped) == {"empty": 1, "degenerate": 1, "too_long": 1, "length_ratio": 1,
                                    "language_id": 1, "duplicate": 1}
    assert report.examples["language_id"][0]["at"] == "f:8"


def test_split_keeps_pairs_sharing_a_sentence_together():
    pairs = [("Geh.", "Go."), ("Lauf!", "Run!"), ("Lauf!", "Run."), ("Renn!", "Run."), ("Hallo.", "Hi.")] + [
        (f"Satz {i}.", f"Sentence {i}.") for i in range(200)]
    assert sorted(map(sorted, sentence_groups(pairs[:5]))) == [[0], [1, 2, 3], [4]]
    parts = carve(pairs, {"valid": 20, "test": 30}, seed=3)
    assert parts == carve(pairs, {"valid": 20, "test": 30}, seed=3)  # the recipe is deterministic
    assert 20 <= len(parts["valid"]) <= 22 and 30 <= len(parts["test"]) <= 32
    assert sum(map(len, parts.values())) == len(pairs)
    run_group = {("Lauf!", "Run!"), ("Lauf!", "Run."), ("Renn!", "Run.")}
    assert sum(bool(run_group & set(part)) for part in parts.values()) == 1
    for name in ("valid", "test"):
        held = {text for pair in parts[name] for text in pair}
        assert not held & {text for pair in parts["train"] for text in pair}


def test_weights_oversample_training_pairs(tmp_path):
    a = write_corpus("tsv", tmp_path, [(f"A {i} x.", f"a {i} y.") for i in range(10)])
    (tmp_path / "b").mkdir()
    b = write_corpus("jsonl", tmp_path / "b", [(f"B {i} x.", f"b {i} y.") for i in range(10)])
    sources = parse_sources({"corpora": [{"name": "a", **a, "weight": 2.5}, {"name": "b", **b, "held_out": {"valid": 2}}],
                             "valid": ["b:valid"]}, "de", "en")
    data = prepare_data(sources, "de", "en", CleaningRules())
    assert sum(s.startswith("A") for s, _ in data.train) == 25
    assert sum(s.startswith("B") for s, _ in data.train) == 8 and len(data.valid["b:valid"]) == 2


# --- end to end: a tiny corpus in each format -> train -> export -> serve -> translate -------------------------

@pytest.fixture(scope="module")
def tiny_pairs(corpus_dir) -> list[tuple[str, str]]:
    de = (corpus_dir / "train.de.txt").read_text(encoding="utf-8").splitlines()[:400]
    en = (corpus_dir / "train.en.txt").read_text(encoding="utf-8").splitlines()[:400]
    return list(zip(de, en))


@pytest.mark.parametrize("fmt", ["tsv", "csv", "moses", "jsonl", "tmx"])
def test_tiny_corpus_trains_exports_serves_and_translates(fmt, tiny_pairs, tmp_path):
    from training.export import export_run
    from training.train import train

    entry = write_corpus(fmt, tmp_path, tiny_pairs, gz=fmt in ("tsv", "tmx"))
    raw = yaml.safe_load((REPO / "training/configs/tiny.yaml").read_text())
    raw["data"] = {"vocab_size": 300, "corpora": [{"name": "mine", **entry, "domain": "test captions",
                                                   "licence": "test data", "held_out": {"valid": 40, "test": 40}}],
                   "valid": ["mine:valid"], "test": ["mine:test"]}
    raw["train"]["epochs"] = 1
    config_path = tmp_path / "mine.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    run_dir, models = tmp_path / "run", tmp_path / "models"
    config = load_config(config_path)
    train(config, run_dir)
    valid = prepare_data(config.sources, "de", "en", config.data.cleaning_rules()).valid["mine:valid"]
    card = export_run(run_dir, models / "de-en", "de", "en", [s for s, _ in valid])
    assert card.training["domains"] == ["test captions"]
    assert card.training["corpora"][0]["train_pairs"] == card.training["splits"]["train"] >= 300
    with running_service(models) as url:
        response = httpx.post(f"{url}/v1/translate", json={"texts": ["Ein Mann fährt Fahrrad."], "source": "de",
                                                           "target": "en"}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["translations"][0]["text"]
        models_info = httpx.get(f"{url}/v1/models", timeout=10).json()
    assert "test captions" in json.dumps(models_info)


def test_corpus_paths_expand_variables_with_defaults(tmp_path, monkeypatch):
    entry = write_corpus("tsv", tmp_path, PAIRS)
    spec = parse_sources({"corpora": [{"name": "c", **entry, "held_out": {"valid": 1}}]}, "de", "en").corpora[0]
    monkeypatch.delenv("MT_TEST_CORPUS", raising=False)
    assert spec.resolved("${MT_TEST_CORPUS:-" + entry["path"] + "}") == Path(entry["path"])
    monkeypatch.setenv("MT_TEST_CORPUS", "/elsewhere/c.tsv")
    assert spec.resolved("${MT_TEST_CORPUS:-" + entry["path"] + "}") == Path("/elsewhere/c.tsv")


def test_a_carved_out_sentence_never_comes_back_through_another_corpus(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shared = ("Wo ist der Bahnhof?", "Where is the station?")
    a = write_corpus("tsv", tmp_path / "a", [shared] + [(f"A {i} x.", f"a {i} y.") for i in range(30)])
    b = write_corpus("jsonl", tmp_path / "b", [shared, ("Guten Morgen.", "Good morning.")])
    sources = parse_sources({"corpora": [{"name": "a", **a, "held_out": {"test": 31}, "seed": 1},
                                         {"name": "b", **b}], "train": ["b"], "valid": ["a:test"]}, "de", "en")
    data = prepare_data(sources, "de", "en", CleaningRules())
    assert shared in data.valid["a:test"] and shared not in data.train
    assert data.train == [("Guten Morgen.", "Good morning.")]
    assert data.report["corpora"]["b"]["held_out_overlap_dropped"] == 1


@pytest.mark.parametrize("path", sorted((REPO / "training/configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_config_loads_and_names_its_own_run(path):
    config = load_config(path)
    assert config.name and config.source != config.target
    others = {p.name: load_config(p).name for p in (REPO / "training/configs").glob("*.yaml") if p != path}
    assert config.name not in others.values(), "two configs would train into the same runs/<name>"
