"""Multi30k task-1 corpus (the ``multi30k`` preset): fetch (or read a local mirror), verify, load.

The corpus is fetched from the public multi30k/dataset repository at a pinned
commit and every decompressed file is checked against its SHA-256. On machines
without internet access, point ``MT_MULTI30K_MIRROR`` (or ``--mirror``) at a
directory holding ``{split}.{lang}.gz`` files with the same content.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
from collections import Counter
from pathlib import Path

from training.cleaning import CleaningRules, clean, normalize
from training.corpus_readers import CorpusError, RawPair

log = logging.getLogger(__name__)

MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
MULTI30K_URL = "https://github.com/multi30k/dataset/raw/{commit}/data/task1/raw/{upstream}.{lang}.gz"
MIRROR_ENV = "MT_MULTI30K_MIRROR"
SPLITS = ("train", "val", "test2016")
LANGUAGES = ("en", "de", "fr", "cs")  # Czech: foreign-language inputs for confidence calibration
UPSTREAM_SPLIT_NAMES = {"train": "train", "val": "val", "test2016": "test_2016_flickr"}

# SHA-256 of the decompressed upstream text (gzip containers differ between mirrors).
TEXT_SHA256 = {
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.fr": "5925a3c18f1587b6b54b87743106e6e8ab93618edb6f65d19eac0621f853a10d",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.fr": "5304e444d842e962b2dda4d816b70b22a1765b15401642b7ca37a67477e708dc",
    "test2016.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    "test2016.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test2016.fr": "cb3160d69b002bb638e66cc7612fcd56cb0af82eadc9c142dedc438afb885ef6",
    "train.cs": "2be68b38c8d586ff4f54eb13cc6e1baaaa053695b3f070d3038303a47f2268da",
    "val.cs": "d53827e469b0a1ca8d57e9e26b2b64c4bc4b33f5479c7b03ae87ae5c882c3e33",
    "test2016.cs": "45adb85f688de8407fddcbe1b36dca15d12aab868149b337e2576f2d6d2ff8d8",
}

LICENCE_NOTE = (
    "Multi30k (Elliott et al., 2016), partly derived from Flickr30K; distributed by its maintainers for "
    "non-commercial research and educational purposes under the Flickr30K terms. No open licence."
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_text(name: str, gz_bytes: bytes, origin: str) -> str:
    data = gzip.decompress(gz_bytes)
    digest = _sha256(data)
    if digest != TEXT_SHA256[name]:
        raise CorpusError(f"{origin}: SHA-256 of {name} is {digest}, expected {TEXT_SHA256[name]}")
    return data.decode("utf-8")


def fetch_multi30k(cache_dir: Path, mirror: Path | None = None) -> Path:
    """Make sure ``cache_dir`` holds verified ``{split}.{lang}.txt`` files for every split and language.

    Reads from ``mirror`` (or ``$MT_MULTI30K_MIRROR``) when given, else downloads from the pinned
    upstream commit. Files already present and verified are kept.
    """
    mirror = mirror or (Path(os.environ[MIRROR_ENV]) if os.environ.get(MIRROR_ENV) else None)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for lang in LANGUAGES:
            name = f"{split}.{lang}"
            target = cache_dir / f"{name}.txt"
            if target.exists() and _sha256(target.read_bytes()) == TEXT_SHA256[name]:
                continue
            if mirror is not None:
                source = mirror / f"{name}.gz"
                if not source.exists():
                    raise CorpusError(f"mirror {mirror} has no {source.name}")
                text = _verified_text(name, source.read_bytes(), str(source))
            else:
                url = MULTI30K_URL.format(commit=MULTI30K_COMMIT, upstream=UPSTREAM_SPLIT_NAMES[split], lang=lang)
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        payload = response.read()
                except OSError as error:
                    raise CorpusError(
                        f"cannot download {url} ({error}); set {MIRROR_ENV} to a local copy of Multi30k"
                    ) from error
                text = _verified_text(name, payload, url)
            partial = target.with_suffix(f".{os.getpid()}.part")  # atomic: several ranks may fetch at once
            partial.write_text(text, encoding="utf-8")
            partial.replace(target)
            log.info("verified %s", target)
    return cache_dir


def clean_pairs(
    sources: list[str], targets: list[str], rules: CleaningRules = CleaningRules()
) -> tuple[list[tuple[str, str]], Counter]:
    """Line-aligned source and target lines through the shared cleaning stage.

    Returns the kept pairs and a counter of dropped pairs by reason (reasons that dropped nothing left out).
    """
    if len(sources) != len(targets):
        raise CorpusError(f"misaligned corpus: {len(sources)} source vs {len(targets)} target lines")
    raw = (RawPair(f"line {i}", s, t) for i, (s, t) in enumerate(zip(sources, targets), start=1))
    kept, report = clean(raw, "", "", rules)
    return kept, Counter({rule: n for rule, n in report.dropped.items() if n})


def read_split(data_dir: Path, split: str, lang: str) -> list[str]:
    path = data_dir / f"{split}.{lang}.txt"
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def load_pairs(data_dir: Path, split: str, src_lang: str, tgt_lang: str, clean: bool = True) -> list[tuple[str, str]]:
    """Pairs of one split. Training splits are cleaned and filtered; evaluation splits only normalized."""
    sources, targets = read_split(data_dir, split, src_lang), read_split(data_dir, split, tgt_lang)
    if not clean:
        return [(normalize(s), normalize(t)) for s, t in zip(sources, targets)]
    pairs, dropped = clean_pairs(sources, targets)
    log.info("%s %s-%s: kept %d of %d pairs, dropped %s", split, src_lang, tgt_lang, len(pairs), len(sources),
             dict(dropped) or "none")
    return pairs
