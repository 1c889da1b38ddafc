"""Graceful shutdown of ``python -m service serve`` (a real subprocess, SIGTERM), and what it writes to disk."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time

import httpx
import pytest
from conftest import REPO
from service_helpers import metric_value, service_process, started_engine, wait_until

from service.engine import TranslationJob

TEXTS = [["Ein Hund rennt.", "Eine Katze schläft."], ["Zwei Kinder spielen."], ["Ein Mann fährt Fahrrad."],
         ["Eine Frau singt ein Lied.", "Drei Hunde bellen."], ["Ein Junge springt ins Wasser."]]
HOLD_S = 4.0  # MT_MAX_WAIT_MS: queued sentences wait this long for batch mates, so requests stay in flight
# The request-level batcher's wait holds sentences in the queue for as long as a test needs; the continuous
# scheduler admits at once, so its SIGTERM test keeps it busy instead (one decoder row for many sentences).


@pytest.fixture(scope="module")
def expected(served_models_dir):
    """Each text's translation (greedy), made in-process."""
    flat = [text for texts in TEXTS for text in texts]
    with started_engine(served_models_dir) as engine:
        result = asyncio.run(engine.translate(TranslationJob(flat, "de", "en", beam_size=1)))
    return dict(zip(flat, (t.text for t in result.translations)))


class InFlight:
    """Requests sent from threads; each records its status and translations (or the exception it got)."""

    def __init__(self, url: str, batches: list[list[str]]) -> None:
        self.results: list[tuple[list[str], object]] = []
        self.retry_after: list[str | None] = []
        self.threads = [threading.Thread(target=self._send, args=(url, texts)) for texts in batches]
        for thread in self.threads:
            thread.start()

    def _send(self, url: str, texts: list[str]) -> None:
        try:
            response = httpx.post(f"{url}/v1/translate", json={"texts": texts, "source": "de", "target": "en",
                                                               "beam_size": 1}, timeout=60)
            body = response.json() if response.headers.get("content-type") == "application/json" else {}
            outcome: object = (response.status_code, [t["text"] for t in body.get("translations", [])] or body)
            self.retry_after.append(response.headers.get("retry-after"))
        except httpx.HTTPError as error:
            outcome = error
        self.results.append((texts, outcome))

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self.threads), "a request hung"

    @property
    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)


def queued(url: str) -> float:
    return metric_value(httpx.get(f"{url}/metrics", timeout=10).text, "mt_queue_depth_sentences")


def refused(url: str) -> bool:
    """Does the server refuse new connections? (a bare connect: a probe that sent a request could be let in
    just before the socket closes and then wait for its answer)"""
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(served_models_dir, expected, tmp_path):
    sentences = sum(len(texts) for texts in TEXTS)
    with service_process(served_models_dir, tmp_path, MT_SCHEDULER="batch", MT_MAX_WAIT_MS=str(HOLD_S * 1000),
                         MT_MAX_BATCH_SENTENCES="64", MT_SHUTDOWN_TIMEOUT_S="20") as (process, url):
        requests = InFlight(url, TEXTS)
        wait_until(lambda: queued(url) == sentences, "every request to be queued")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # uvicorn looks at its exit flag every 0.1 s, then closes the listening socket
        wait_until(lambda: refused(url), "new connections to be refused", timeout=HOLD_S)
        assert not requests.done  # refused while the earlier requests were still in flight
        requests.join(timeout=30)
        exit_code = process.wait(timeout=30)
        stopped_after = time.monotonic() - signalled
    assert exit_code == 0
    assert stopped_after < HOLD_S + 10
    for texts, outcome in requests.results:
        assert outcome == (200, [expected[text] for text in texts]), (texts, outcome)
    log = [json.loads(line) for line in process.log.read_text().splitlines() if line.startswith("{")]
    assert any(record["msg"] == "shutting down: draining the batch queue" for record in log)
    assert not [record for record in log if record["level"] in ("error", "critical") or "exception" in record]


def test_shutdown_timeout_bounds_the_wait_for_requests_that_cannot_finish(served_models_dir, tmp_path):
    """With MT_SHUTDOWN_TIMEOUT_S=1 and sentences held in the queue for a minute, SIGTERM still ends the
    process (exit 0) within seconds, and the held requests get a 503 (not a hang, not a bare 500)."""
    with service_process(served_models_dir, tmp_path, MT_SCHEDULER="batch", MT_MAX_WAIT_MS="60000",
                         MT_MAX_BATCH_SENTENCES="64", MT_SHUTDOWN_TIMEOUT_S="1") as (process, url):
        requests = InFlight(url, TEXTS[:2])
        wait_until(lambda: queued(url) == 3, "the requests to be queued")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=30)
        stopped_after = time.monotonic() - signalled
        requests.join(timeout=10)
    assert exit_code == 0 and stopped_after < 10
    for _, outcome in requests.results:
        assert outcome == (503, {"error": "the service shut down before the request was finished"}), outcome
    assert requests.retry_after == ["1"] * len(requests.results)  # MT_RETRY_AFTER_S, like every 503


def test_sigterm_lets_the_continuous_scheduler_finish_what_it_decodes_and_queues(served_models_dir, tmp_path):
    texts = [f"Ein Hund rennt {n} Mal um das Haus. Eine Katze schläft. Zwei Kinder spielen." for n in range(64)]
    with service_process(served_models_dir, tmp_path, MT_SCHEDULER="continuous", MT_MAX_ACTIVE_ROWS="1",
                         MT_SHUTDOWN_TIMEOUT_S="60") as (process, url):
        requests = InFlight(url, [texts])
        wait_until(lambda: queued(url) > 30, "sentences waiting behind the one decoder row")  # 66 distinct
        process.send_signal(signal.SIGTERM)
        requests.join(timeout=60)
        exit_code = process.wait(timeout=60)
    assert exit_code == 0
    [(_, (status, translations))] = requests.results
    assert status == 200 and len(translations) == len(texts) and all(translations)
    log = [json.loads(line) for line in process.log.read_text().splitlines() if line.startswith("{")]
    assert not [record for record in log if record["level"] in ("error", "critical") or "exception" in record]


# ---- read-only root filesystem ------------------------------------------------------------------------------------

WRITE_AUDIT = """
import atexit, os, sys
allowed = tuple(os.path.realpath(p) + os.sep for p in sys.argv[1].split(os.pathsep))
writes = []
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int) or (not any(c in (mode or "") for c in "wax+")
                                     and not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND)):
            return
    elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link"):
        path = args[0]
    else:
        return
    path = os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path)
    if not (os.path.realpath(path) + os.sep).startswith(allowed) and not path.startswith("/dev/"):
        writes.append(f"{event} {path}")
sys.addaudithook(hook)
atexit.register(lambda: print("WRITES " + repr(writes), file=sys.stderr, flush=True))
sys.argv = ["service"] + sys.argv[2:]
from service.cli import main
sys.exit(main())
"""


def test_serving_writes_nothing_outside_the_temp_dir(served_models_dir, tmp_path):
    """Every file the serving process opens for writing (Python audit hooks: open, mkdir, rename, remove...),
    through start-up, requests of every kind and shutdown, lies under $TMPDIR: a read-only root filesystem works.
    The working directory and $HOME are fresh empty folders and must stay empty."""
    temp, home, work = tmp_path / "tmp", tmp_path / "home", tmp_path / "work"
    for folder in (temp, home, work):
        folder.mkdir()
    models_before = sorted((p.relative_to(served_models_dir), p.stat().st_mtime) for p in served_models_dir.rglob("*"))
    wrapper = [sys.executable, "-c", WRITE_AUDIT, str(temp)]
    env = {"TMPDIR": str(temp), "HOME": str(home), "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    with service_process(served_models_dir, tmp_path, prefix=wrapper, cwd=work, MT_WARMUP="true",
                         MT_METRICS_PORT="0", MT_MAX_BODY_BYTES="3000000", **env) as (process, url):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.post("/translate", json={"q": "Ein Hund.", "source": "auto", "target": "en"}).is_success
            assert client.post("/translate", files={"q": (None, "Ein Hund."), "source": (None, "de"),
                                                    "target": (None, "en")}).is_success
            big = {"q": ("text.txt", b"x" * 2_000_000, "text/plain"), "source": (None, "de"), "target": (None, "en")}
            assert client.post("/translate", files=big).status_code == 400  # spooled to a temp file, then refused
            assert client.post("/v1/translate", json={"texts": ["<p>Ein Hund.</p>"], "target": "en", "format": "html",
                                                      "return_attention": True}).is_success
            assert client.post("/detect", data={"q": "Ein Hund."}).is_success
            assert client.get("/").is_success and client.get("/languages").is_success
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    audit = [line for line in process.log.read_text().splitlines() if line.startswith("WRITES ")]
    assert audit == ["WRITES []"], audit
    assert not any(home.iterdir()) and not any(work.iterdir())
    assert sorted((p.relative_to(served_models_dir), p.stat().st_mtime)
                  for p in served_models_dir.rglob("*")) == models_before
