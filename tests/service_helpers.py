"""Helpers for the service tests: settings, a uvicorn server in a thread, a gate that holds decoder batches."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from service.config import Settings
from service.engine import TranslationEngine


def settings_for(models_dir: Path, **overrides) -> Settings:
    """Test settings: no warm-up (seconds saved per engine); anything else as given."""
    return Settings(models_dir=models_dir, warmup=False, device="cpu", threads=1, **overrides)


def loaded_engine(models_dir: Path, **overrides) -> TranslationEngine:
    engine = TranslationEngine(settings_for(models_dir, **overrides))
    engine.start()
    return engine


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until ``condition()``; the timeout only guards against hanging, it is not a performance check."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        if not server.started:
            raise RuntimeError("uvicorn did not start (see the log)")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class Gate:
    """Stands in for a model's SentenceTranslator: holds every decoder batch until ``open()``, and records
    the sources each batch decoded (so a test can tell which sentences were never decoded)."""

    def __init__(self, translator) -> None:
        self.inner = translator
        self._open = threading.Event()
        self.batches: list[list[list[int]]] = []
        self.entered = threading.Event()

    def encode(self, sentence: str) -> list[int]:
        return self.inner.encode(sentence)

    def translate_ids(self, sources, options):
        self.batches.append([list(s) for s in sources])
        self.entered.set()
        if not self._open.wait(60):
            raise RuntimeError("gate never opened")
        return self.inner.translate_ids(sources, options)

    def open(self) -> None:
        self._open.set()

    def decoded(self, sentence: str) -> bool:
        ids = self.encode(sentence)
        return any(ids in batch for batch in self.batches)


def gate(engine: TranslationEngine, model_id: str = "de-en") -> Gate:
    model = engine.registry.models[model_id]
    model.translator = Gate(model.translator)
    return model.translator


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value from Prometheus text format (0 when absent)."""
    pattern = re.escape(name) + (r"\{" + _labels_regex(labels) + r"\}" if labels else r"(\{\})?") + r" (\S+)"
    match = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(match.lastindex)) if match else 0.0


def _labels_regex(labels: dict[str, str]) -> str:
    """Labels in any order: a lookahead per label over the brace contents."""
    return "".join(f'(?=[^}}]*{re.escape(k)}="{re.escape(v)}")' for k, v in labels.items()) + r"[^}]*"
