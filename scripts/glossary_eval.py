"""Glossaries and do-not-translate spans, measured on Multi30k test2016 through the service's own engine.

    python scripts/glossary_eval.py [--models models] [--pair de-en] [--mirror DIR] [--sentences 300] [--seed 13]

Three seeded sets of test2016 sentences, each translated with the model card's default beam:

- glossary: sentences holding one of the German nouns of ``NOUNS`` (inflected forms included, as the service
  matches them), each given one entry, that noun -> its English term. Several terms are deliberately not the
  model's usual choice (``Hund`` -> ``hound``, ``Fahrrad`` -> ``bicycle``, ...), so the share of plain outputs
  that already hold the term shows what the glossary had to enforce. Reported: the share of outputs holding
  the required term (case-insensitive, as a whole word), without and with the glossary; BLEU of the set without
  glossary, with it, and with a request whose glossary matches nothing (must equal the plain output exactly).
- do-not-translate: sentences with one of ``SPANS`` inserted between two words at a seeded position, the span
  given as ``do_not_translate``. Reported: the share of outputs holding it verbatim (case-sensitive), without
  and with ``do_not_translate``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sacrebleu  # noqa: E402

from service import glossary  # noqa: E402
from service.config import Settings  # noqa: E402
from service.engine import TranslationEngine, TranslationJob  # noqa: E402

# German caption nouns -> English term; those marked # syn. are not the model's usual word for it.
NOUNS = {
    "Mann": "man", "Frau": "woman", "Hund": "hound",  # syn.
    "Kind": "kid",  # syn.
    "Mädchen": "girl", "Straße": "road",  # syn.
    "Wasser": "water", "Ball": "ball", "Fahrrad": "bicycle",  # syn.
    "Auto": "automobile",  # syn.
    "Hemd": "shirt", "Jacke": "jacket", "Strand": "beach", "Gebäude": "building", "Gruppe": "group",
    "Leute": "folks",  # syn.
    "Stadt": "town",  # syn.
    "Baum": "tree", "Gras": "grass", "Schnee": "snow", "Berg": "mountain", "Tisch": "table", "Bühne": "stage",
    "Gitarre": "guitar", "Pferd": "horse", "Boot": "boat", "Hut": "hat", "Arbeiter": "laborer",  # syn.
    "Feld": "field", "Sonnenbrille": "sunglasses", "Mütze": "beanie",  # syn.
    "Kamera": "camera", "Zaun": "fence", "Fluss": "river", "Felsen": "boulder",  # syn.
    "Menge": "crowd", "Hose": "trousers",  # syn.
    "Restaurant": "diner",  # syn.
    "Brücke": "bridge", "Küche": "kitchen",
}
SYNONYMS = frozenset({"Hund", "Kind", "Straße", "Fahrrad", "Auto", "Leute", "Stadt", "Arbeiter", "Mütze", "Felsen",
                      "Hose", "Restaurant"})  # the entries marked # syn. above
SPANS = ["{user}", "%s", "XR-200", "{count}", "ACME-7", "%d", "{{name}}", "SKU-4711"]
BATCH = 32  # texts per engine job


def default_mirror() -> Path:
    return Path(os.environ.get("MT_MULTI30K_MIRROR") or Path(__file__).resolve().parents[2] / "shared/data/multi30k")


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def contains(text: str, term: str, case_sensitive: bool = False) -> bool:
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.search(r"(?<![\w])" + re.escape(term) + r"(?![\w])", text, flags) is not None


def translate(engine: TranslationEngine, texts: list[str], terms_per_text: list[tuple[glossary.Term, ...]],
              source: str, target: str) -> list[str]:
    """One job per text that has terms (terms are per request), batched jobs for the rest."""
    out: list[str | None] = [None] * len(texts)
    plain = [i for i, terms in enumerate(terms_per_text) if not terms]
    for start in range(0, len(plain), BATCH):
        chunk = plain[start : start + BATCH]
        result = asyncio.run(engine.translate(TranslationJob([texts[i] for i in chunk], source, target)))
        for i, t in zip(chunk, result.translations):
            out[i] = t.text
    for i, terms in enumerate(terms_per_text):
        if terms:
            job = TranslationJob([texts[i]], source, target, terms=terms)
            out[i] = asyncio.run(engine.translate(job)).translations[0].text
    return [t or "" for t in out]


def glossary_set(sources: list[str], references: list[str], count: int, rng: random.Random, language: str
                 ) -> list[tuple[int, str]]:
    """(sentence index, the noun whose entry it gets) for up to ``count`` sentences holding one of NOUNS."""
    candidates = []
    for index, sentence in enumerate(sources):
        present = [noun for noun in NOUNS if glossary.find(sentence, (glossary.Term(noun, NOUNS[noun]),), language)]
        if present:
            candidates.append((index, rng.choice(present)))
    rng.shuffle(candidates)
    return sorted(candidates[:count])


def insert_span(sentence: str, span: str, rng: random.Random) -> str:
    words = sentence.split()
    position = rng.randint(1, max(1, len(words) - 1))
    return " ".join(words[:position] + [span] + words[position:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--pair", default="de-en")
    parser.add_argument("--mirror", type=Path, default=default_mirror())
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    source, target = args.pair.split("-")
    if (source, target) != ("de", "en"):
        parser.error("the noun list is German -> English: --pair de-en")
    sources = read(args.mirror / f"test2016.{source}.gz")
    references = read(args.mirror / f"test2016.{target}.gz")
    rng = random.Random(args.seed)
    engine = TranslationEngine(Settings(models_dir=args.models, warmup=False, cache_size=0, device="cpu",
                                        max_queue_sentences=10_000))
    engine.start()
    began = time.monotonic()
    try:
        # ---- glossary
        chosen = glossary_set(sources, references, args.sentences, rng, source)
        texts = [sources[i] for i, _ in chosen]
        refs = [references[i] for i, _ in chosen]
        entries = [(glossary.Term(noun, NOUNS[noun]),) for _, noun in chosen]
        unmatched = [(glossary.Term("Zeppelinhangar", "airship hangar"), glossary.Term("XQ-9", None))] * len(texts)
        plain = translate(engine, texts, [()] * len(texts), source, target)
        forced = translate(engine, texts, entries, source, target)
        idle = translate(engine, texts, unmatched, source, target)
        had = sum(contains(p, e[0].target) for p, e in zip(plain, entries))
        has = sum(contains(f, e[0].target) for f, e in zip(forced, entries))
        bleu = {name: sacrebleu.corpus_bleu(out, [refs]).score for name, out in
                (("plain", plain), ("glossary", forced), ("glossary matching nothing", idle))}
        usual = [k for k, e in enumerate(entries) if e[0].source not in SYNONYMS]  # entries with the usual word
        bleu_usual = {name: sacrebleu.corpus_bleu([out[k] for k in usual], [[refs[k] for k in usual]]).score
                      for name, out in (("plain", plain), ("glossary", forced))}
        # ---- do-not-translate
        picks = rng.sample(range(len(sources)), min(args.sentences, len(sources)))
        spans = [SPANS[k % len(SPANS)] for k in range(len(picks))]
        dnt_texts = [insert_span(sources[i], span, rng) for i, span in zip(picks, spans)]
        dnt_plain = translate(engine, dnt_texts, [()] * len(picks), source, target)
        dnt_forced = translate(engine, dnt_texts, [(glossary.Term(s, None),) for s in spans], source, target)
        kept_plain = sum(s in out for s, out in zip(spans, dnt_plain))
        kept = sum(s in out for s, out in zip(spans, dnt_forced))
        dnt_refs = [references[i] for i in picks]
        without_span = translate(engine, [sources[i] for i in picks], [()] * len(picks), source, target)
        removed = [" ".join(out.replace(span, " ").split()) for span, out in zip(spans, dnt_forced)]
        dnt_bleu = {"the sentences without the span": sacrebleu.corpus_bleu(without_span, [dnt_refs]).score,
                    "with the span and do_not_translate (span removed from the output)":
                        sacrebleu.corpus_bleu(removed, [dnt_refs]).score}
    finally:
        engine.stop()

    n, m = len(texts), len(picks)
    print(f"command: python scripts/glossary_eval.py --models {args.models} --pair {args.pair} "
          f"--sentences {args.sentences} --seed {args.seed}")
    print(f"model: {args.models / args.pair}; beam: model default; {time.monotonic() - began:.0f} s")
    print(f"glossary: {n} test2016 sentences, one entry each ({len({e[0].source for e in entries})} distinct nouns)")
    print(f"  required term in the output: without glossary {had}/{n} ({100 * had / n:.1f}%), "
          f"with glossary {has}/{n} ({100 * has / n:.1f}%)")
    for name, score in bleu.items():
        print(f"  BLEU {name}: {score:.2f}")
    print(f"  BLEU of the {len(usual)} sentences whose entry is the usual word (no synonym): "
          f"plain {bleu_usual['plain']:.2f}, glossary {bleu_usual['glossary']:.2f}")
    same = sum(a == b for a, b in zip(plain, idle))
    print(f"  outputs identical to plain with a glossary that matches nothing: {same}/{n}")
    print(f"do-not-translate: {m} test2016 sentences, one span inserted each ({', '.join(SPANS)})")
    print(f"  span verbatim in the output: without do_not_translate {kept_plain}/{m} ({100 * kept_plain / m:.1f}%), "
          f"with it {kept}/{m} ({100 * kept / m:.1f}%)")
    for name, score in dnt_bleu.items():
        print(f"  BLEU {name}: {score:.2f}")
    for text, out, entry in list(zip(texts, forced, entries))[:3]:
        print(f"  example: {text!r} + {entry[0].source}->{entry[0].target}: {out!r}")
    for text, out in list(zip(dnt_texts, dnt_forced))[:3]:
        print(f"  example: {text!r}: {out!r}")


if __name__ == "__main__":
    main()
