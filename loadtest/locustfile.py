"""Load scenario: users translate corpus sentences through both APIs, single texts and lists, several pairs.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 8 -t 1m

Each user sends one request, waits for the answer (and the think time), and sends the next, so the user
count is the number of requests in flight. A request is one of four kinds, drawn by weight:

    libre         POST /translate      {"q": "<sentence>", ...}            (LibreTranslate, single text)
    libre_list    POST /translate      {"q": ["<s1>", "<s2>", ...], ...}   (LibreTranslate, list)
    native        POST /v1/translate   {"texts": ["<sentence>"], ...}      (native API, one text)
    native_list   POST /v1/translate   {"texts": ["<s1>", ...], ...}       (native API, list)

Options (command line, or the environment variable in brackets):

    --corpus      [LOADTEST_CORPUS]     sentence file per source language: a path with {lang} in it, e.g.
                                        /data/val.{lang}.gz; plain text or gzip, one sentence per line.
                                        Default: $MT_MULTI30K_MIRROR/val.{lang}.gz (Multi30k validation), else
                                        the shared Multi30k copy beside the checkout, else a few built-in
                                        sentences (with a warning: fine for a smoke test, not for measuring).
    --pairs       [LOADTEST_PAIRS]      source-target pairs with optional weights: "de-en=1,en-de=1"
    --mix         [LOADTEST_MIX]        request kinds with weights: "libre=4,libre_list=1,native=4,native_list=1"
    --list-size   [LOADTEST_LIST_SIZE]  texts per list request, "N" or "MIN-MAX" (default 2-8)
    --beam-size   [LOADTEST_BEAM_SIZE]  beam size sent on the native API (default: the service's default)
    --think-time  [LOADTEST_THINK_TIME] seconds between a user's requests, "S" or "MIN-MAX" (default 0)
    --summary-json [LOADTEST_SUMMARY_JSON]  write texts/requests counted since the last stats reset here

The compose stack runs it with `docker compose --profile loadtest up loadtest`; `loadtest/run.py`
(`make loadtest`) runs it at increasing user counts and writes a report.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import time
from pathlib import Path

from locust import FastHttpUser, between, constant, events, task

log = logging.getLogger("loadtest")

KINDS = ("libre", "libre_list", "native", "native_list")
DEFAULT_MIX = "libre=4,libre_list=1,native=4,native_list=1"
DEFAULT_PAIRS = "de-en=1,en-de=1"

# Written for this file (not corpus text): used only when no corpus file can be found.
BUILTIN_SENTENCES = {
    "de": ["Ein Hund läuft im Park.", "Zwei Männer spielen Fußball auf einer Wiese.",
           "Eine Frau sitzt auf einer Bank und liest ein Buch.", "Ein kleines Mädchen klettert auf einen Baum.",
           "Mehrere Leute stehen vor einem Gebäude und warten.", "Ein Mann in einem roten Hemd fährt Fahrrad.",
           "Kinder spielen am Strand im Sand.", "Ein schwarzer Hund springt über einen Zaun."],
    "en": ["A dog runs in the park.", "Two men are playing soccer on a meadow.",
           "A woman sits on a bench and reads a book.", "A little girl climbs a tree.",
           "Several people stand in front of a building and wait.", "A man in a red shirt rides a bike.",
           "Children play in the sand on the beach.", "A black dog jumps over a fence."],
}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--corpus", env_var="LOADTEST_CORPUS", default="",
                        help="sentence file per source language, with {lang} in the path (plain or .gz)")
    parser.add_argument("--pairs", env_var="LOADTEST_PAIRS", default=DEFAULT_PAIRS,
                        help='language pairs with weights, e.g. "de-en=1,en-de=1"')
    parser.add_argument("--mix", env_var="LOADTEST_MIX", default=DEFAULT_MIX,
                        help=f"request kinds with weights ({', '.join(KINDS)})")
    parser.add_argument("--list-size", env_var="LOADTEST_LIST_SIZE", default="2-8",
                        help='texts per list request: "N" or "MIN-MAX"')
    parser.add_argument("--beam-size", env_var="LOADTEST_BEAM_SIZE", type=int, default=0,
                        help="beam size on the native API (0: the service's default)")
    parser.add_argument("--think-time", env_var="LOADTEST_THINK_TIME", default="0",
                        help='seconds between requests of one user: "S" or "MIN-MAX"')
    parser.add_argument("--summary-json", env_var="LOADTEST_SUMMARY_JSON", default="",
                        help="write the counts of texts and requests since the last stats reset to this file")


# ---- configuration, parsed once per process -----------------------------------------------------------------

def parse_weights(spec: str, allowed: tuple[str, ...] | None = None) -> dict[str, float]:
    """'a=3,b,c=0.5' -> {'a': 3.0, 'b': 1.0, 'c': 0.5}; zero weights are dropped."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("=")
        name = name.strip()
        if allowed is not None and name not in allowed:
            raise ValueError(f"unknown name {name!r} in {spec!r} (known: {', '.join(allowed)})")
        value = float(weight) if weight else 1.0
        if value < 0:
            raise ValueError(f"negative weight in {spec!r}")
        if value:
            weights[name] = value
    if not weights:
        raise ValueError(f"no positive weight in {spec!r}")
    return weights


def parse_range(spec: str, kind=float) -> tuple:
    """'3' -> (3, 3); '2-8' -> (2, 8)."""
    low, _, high = str(spec).partition("-")
    low_value = kind(low)
    high_value = kind(high) if high else low_value
    if low_value < 0 or high_value < low_value:
        raise ValueError(f"bad range {spec!r}")
    return low_value, high_value


def read_sentences(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def corpus_template(option: str) -> str | None:
    """The --corpus template, else the Multi30k validation split from the mirror or the shared copy."""
    if option:
        return option
    candidates = [os.environ.get("MT_MULTI30K_MIRROR"),
                  str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "multi30k")]
    for directory in filter(None, candidates):
        if Path(directory, "val.de.gz").exists() or Path(directory, "val.en.gz").exists():
            return str(Path(directory) / "val.{lang}.gz")
    return None


class Scenario:
    """Sentences per source language, the pairs, the request mix and sizes."""

    def __init__(self, options) -> None:
        self.pairs = parse_weights(options.pairs)
        for pair in self.pairs:
            if len(pair.split("-")) != 2:
                raise ValueError(f"pairs look like de-en, got {pair!r}")
        self.mix = parse_weights(options.mix, KINDS)
        self.list_size = parse_range(options.list_size, int)
        if self.list_size[0] < 1:
            raise ValueError("list size must be at least 1")
        self.beam_size = options.beam_size or None
        think = parse_range(options.think_time, float)
        self.wait_time = constant(think[0]) if think[0] == think[1] else between(*think)
        template = corpus_template(options.corpus)
        self.sentences: dict[str, list[str]] = {}
        for source in sorted({pair.split("-")[0] for pair in self.pairs}):
            path = Path(template.format(lang=source)) if template else None
            if path is not None and path.exists():
                self.sentences[source] = read_sentences(path)
                log.info("%d %s sentences from %s", len(self.sentences[source]), source, path)
            elif source in BUILTIN_SENTENCES:
                log.warning("no corpus file for %s (%s): using %d built-in sentences; pass --corpus for real "
                            "traffic", source, path or "no --corpus and no Multi30k mirror",
                            len(BUILTIN_SENTENCES[source]))
                self.sentences[source] = BUILTIN_SENTENCES[source]
            else:
                raise FileNotFoundError(f"no sentences for source language {source!r}: pass --corpus")
            if not self.sentences[source]:
                raise ValueError(f"{path} holds no sentences")

    def pick(self, rng: random.Random) -> tuple[str, str, str, list[str]]:
        """(kind, source, target, texts) for the next request."""
        kind = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        pair = rng.choices(list(self.pairs), weights=list(self.pairs.values()))[0]
        source, target = pair.split("-")
        count = rng.randint(*self.list_size) if kind.endswith("_list") else 1
        return kind, source, target, rng.choices(self.sentences[source], k=count)


class Counts:
    """Texts and requests answered correctly since the last stats reset (per process)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.since = time.time()
        self.requests = 0
        self.texts = 0
        self.by_kind = {kind: {"requests": 0, "texts": 0} for kind in KINDS}

    def add(self, kind: str, texts: int) -> None:
        self.requests += 1
        self.texts += texts
        self.by_kind[kind]["requests"] += 1
        self.by_kind[kind]["texts"] += texts

    def as_dict(self) -> dict:
        return {"seconds": time.time() - self.since, "requests": self.requests, "texts": self.texts,
                "by_kind": self.by_kind}


SCENARIO: Scenario | None = None
COUNTS = Counts()


@events.init.add_listener
def _init(environment, **_) -> None:
    global SCENARIO
    if environment.parsed_options is not None:
        SCENARIO = Scenario(environment.parsed_options)


@events.reset_stats.add_listener
def _reset() -> None:
    COUNTS.reset()


@events.test_stop.add_listener
def _write_summary(environment, **_) -> None:
    path = environment.parsed_options.summary_json if environment.parsed_options else ""
    if path:
        Path(path).write_text(json.dumps(COUNTS.as_dict(), indent=2), encoding="utf-8")


# ---- the user ---------------------------------------------------------------------------------------------------

def check_answer(kind: str, texts: list[str], body: dict) -> str | None:
    """Why an answer is wrong, or None. Checks shape and that every text got a non-empty translation."""
    if kind.startswith("libre"):
        translated = body.get("translatedText")
        if kind == "libre":
            translated = [translated]
    else:
        translated = [item.get("text") for item in body.get("translations", [])]
    if not isinstance(translated, list) or len(translated) != len(texts):
        return f"expected {len(texts)} translations, got {translated!r:.200}"
    if not all(isinstance(t, str) and t.strip() for t in translated):
        return "empty or missing translation"
    return None


class Translator(FastHttpUser):
    def wait_time(self) -> float:
        return SCENARIO.wait_time(self) if SCENARIO else 0.0

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def translate(self) -> None:
        kind, source, target, texts = SCENARIO.pick(self.rng)
        if kind.startswith("libre"):
            path = "/translate"
            payload = {"q": texts[0] if kind == "libre" else texts, "source": source, "target": target,
                       "format": "text"}
        else:
            path = "/v1/translate"
            payload = {"texts": texts, "source": source, "target": target}
            if SCENARIO.beam_size:
                payload["beam_size"] = SCENARIO.beam_size
        name = f"{path} [{'list' if kind.endswith('_list') else 'text'}]"
        with self.client.post(path, json=payload, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                problem = check_answer(kind, texts, response.json())
            except ValueError as error:
                problem = f"invalid JSON: {error}"
            if problem:
                response.failure(problem)
            else:
                response.success()
                COUNTS.add(kind, len(texts))
