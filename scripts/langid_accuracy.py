"""Accuracy of the service's language identification on Multi30k test2016 (one sentence per line).

    python scripts/langid_accuracy.py [--mirror DIR] [--languages de en fr] [--words N]

Each test2016 file is one language; every sentence (or its first N words) is classified among
``--languages``, as the service does for ``source: auto`` (restricted to its served source languages).
Prints per-language and overall accuracy and the confusions.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.language_id import LanguageDetector  # noqa: E402


def default_mirror() -> Path:
    return Path(os.environ.get("MT_MULTI30K_MIRROR") or Path(__file__).resolve().parents[2] / "shared/data/multi30k")


def evaluate(mirror: Path, languages: list[str], words: int | None = None, split: str = "test2016") -> dict:
    """{"accuracy", "sentences", "by_language": {lang: accuracy}, "confusions": {"true->guess": count}}."""
    detector = LanguageDetector(languages)
    by_language, confusions, total, correct = {}, Counter(), 0, 0
    for language in languages:
        with gzip.open(mirror / f"{split}.{language}.gz", "rt", encoding="utf-8") as handle:
            sentences = [line.strip() for line in handle if line.strip()]
        if words:
            sentences = [" ".join(s.split()[:words]) for s in sentences]
        guesses = [detector.detect(sentence).language for sentence in sentences]
        right = sum(guess == language for guess in guesses)
        by_language[language] = round(right / len(sentences), 4)
        confusions.update(f"{language}->{guess}" for guess in guesses if guess != language)
        total, correct = total + len(sentences), correct + right
    return {"accuracy": round(correct / total, 4), "sentences": total, "by_language": by_language,
            "confusions": dict(confusions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, default=default_mirror())
    parser.add_argument("--languages", nargs="+", default=["de", "en", "fr"])
    parser.add_argument("--words", type=int, help="classify only the first N words of each sentence")
    args = parser.parse_args()
    result = evaluate(args.mirror, args.languages, args.words)
    print(f"test2016, {result['sentences']} sentences{f' (first {args.words} words)' if args.words else ''}, "
          f"candidates {' '.join(args.languages)}: accuracy {result['accuracy']:.4f}")
    for language, accuracy in result["by_language"].items():
        print(f"  {language}: {accuracy:.4f}")
    for pair, count in sorted(result["confusions"].items()):
        print(f"  confused {pair}: {count}")


if __name__ == "__main__":
    main()
