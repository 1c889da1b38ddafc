"""Corpus fetching and cleaning."""

import gzip
from pathlib import Path

import pytest

from training.data import TEXT_SHA256, CorpusError, clean_pairs, fetch_multi30k, normalize


def test_normalize_handles_the_known_defects():
    assert normalize("A &amp; B") == "A & B"
    assert normalize("Nummer\u00a028") == "Nummer 28"
    assert normalize("\tEin  Mann\t ") == "Ein Mann"
    assert normalize("zero\u200bwidth") == "zerowidth"
    assert normalize("Mädchen") == "M\u00e4dchen"  # composed form (NFC)
    assert normalize("Ma\u0308dchen") == "M\u00e4dchen"


def test_clean_pairs_drops_and_counts():
    sources = ["A dog runs.", "", "A cat.", "Two men " * 50, "Yes", "A man is running along the beach today."]
    targets = ["Ein Hund rennt.", "Leer", "@@", "Zwei Männer", "Ja", "Ein Mann."]
    kept, dropped = clean_pairs(sources, targets)
    assert kept == [("A dog runs.", "Ein Hund rennt."), ("Yes", "Ja")]
    assert dropped == {"empty": 1, "degenerate": 1, "too_long": 1, "length_ratio": 1}


def test_real_training_split_drops_only_the_placeholders_and_duplicates(corpus_dir):
    from training.data import load_pairs

    pairs = load_pairs(corpus_dir, "train", "en", "de")
    assert len(pairs) == 29000 - 2 - 3  # 2 "@@" placeholders, 3 exact duplicate pairs
    assert all("@@" != t for _, t in pairs)
    assert not any("&amp;" in s for s, _ in pairs)


def test_mirror_with_corrupted_file_is_rejected(tmp_path, corpus_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in TEXT_SHA256:
        data = (corpus_dir / f"{name}.txt").read_bytes()
        if name == "val.de":
            data = data.replace(b"Hund", b"Katze", 1)
        (mirror / f"{name}.gz").write_bytes(gzip.compress(data))
    with pytest.raises(CorpusError, match="val.de"):
        fetch_multi30k(tmp_path / "cache", mirror)


def test_missing_mirror_file_names_the_file(tmp_path):
    with pytest.raises(CorpusError, match="train.en.gz"):
        fetch_multi30k(tmp_path / "cache", Path(tmp_path))


@pytest.mark.parametrize("ci, outcome", [("true", "Failed"), ("", "Skipped")])
def test_a_missing_mirror_fails_in_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    import conftest

    monkeypatch.setattr(conftest, "multi30k_mirror", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(BaseException) as stopped:
        conftest.require_mirror()
    assert type(stopped.value).__name__ == outcome
