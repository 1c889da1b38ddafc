"""Helpers for the service tests: settings, a uvicorn server in a thread, a gate that holds decoder batches."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import uvicorn

from service.config import Settings
from service.engine import TranslationEngine
from service.scheduler import ContinuousBatcher


def settings_for(models_dir: Path, **overrides) -> Settings:
    """Test settings: no warm-up (seconds saved per engine) and no translation cache (tests that hold, fail or
    count decoder batches need every sentence decoded; tests/test_cache.py turns it on); anything else as given."""
    return Settings(**{"models_dir": models_dir, "warmup": False, "device": "cpu", "threads": 1, "cache_size": 0,
                       **overrides})


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


@contextlib.contextmanager
def started_engine(models_dir: Path, **overrides) -> Iterator[TranslationEngine]:
    """``loaded_engine``, stopped when the block ends."""
    engine = loaded_engine(models_dir, **overrides)
    try:
        yield engine
    finally:
        engine.stop()


@contextlib.contextmanager
def running_service(models_dir: Path, **overrides) -> Iterator[str]:
    """A loaded engine behind the real app under uvicorn; yields the base URL and stops the engine after."""
    from service.api.app import create_app

    with started_engine(models_dir, **overrides) as engine, serve_in_thread(create_app(engine.settings, engine)) as url:
        yield url


class Gate:
    """Stands in for a model's step model: holds every encoder call (the start of a decoder batch, or an admission
    to the continuous batch) until ``open()``, and records the sources each call encoded (so a test can tell which
    sentences were never decoded)."""

    def __init__(self, translator) -> None:
        self.translator = translator
        self.inner = translator.model
        self.bos_id, self.eos_id = self.inner.bos_id, self.inner.eos_id
        self._open = threading.Event()
        self.batches: list[list[list[int]]] = []
        self.entered = threading.Event()

    def encode(self, src, lengths):
        self.batches.append([row[:n].tolist() for row, n in zip(src, lengths)])
        self.entered.set()
        if not self._open.wait(60):
            raise RuntimeError("gate never opened")
        return self.inner.encode(src, lengths)

    def step(self, prev_tokens, state, encoded):
        return self.inner.step(prev_tokens, state, encoded)

    @property
    def supports_top_k(self) -> bool:
        return getattr(self.inner, "supports_top_k", False)

    def step_top_k(self, prev_tokens, state, encoded, k):
        return self.inner.step_top_k(prev_tokens, state, encoded, k)

    def open(self) -> None:
        self._open.set()

    def decoded(self, sentence: str) -> bool:
        ids = self.translator.encode(sentence)
        return any(ids in batch for batch in self.batches)


def gate(engine: TranslationEngine, model_id: str = "de-en") -> Gate:
    """Put a ``Gate`` in front of the model's step model; ``ungate`` takes it away."""
    held = Gate(engine.registry.models[model_id].translator)
    _use_step_model(engine, model_id, held)
    return held


def ungate(engine: TranslationEngine, held: Gate, model_id: str = "de-en") -> None:
    held.open()
    _use_step_model(engine, model_id, held.inner)


def _use_step_model(engine: TranslationEngine, model_id: str, model) -> None:
    engine.registry.models[model_id].translator.model = model
    if isinstance(engine.batcher, ContinuousBatcher):  # a scheduler made before holds the model it was given
        engine.batcher.scheduler(model_id).search.model = model


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value from Prometheus text format (0 when absent)."""
    pattern = re.escape(name) + (r"\{" + _labels_regex(labels) + r"\}" if labels else r"(\{\})?") + r" (\S+)"
    match = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(match.lastindex)) if match else 0.0


def _labels_regex(labels: dict[str, str]) -> str:
    """Labels in any order: a lookahead per label over the brace contents."""
    return "".join(f'(?=[^}}]*{re.escape(k)}="{re.escape(v)}")' for k, v in labels.items()) + r"[^}]*"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def service_process(models_dir: Path, log_dir: Path, prefix: list[str] | None = None, cwd: Path | None = None,
                    **env: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``python -m service serve`` as a subprocess on a free loopback port, ready; yields (process, base URL).

    ``prefix`` replaces ``python -m service`` (e.g. a wrapper); ``env`` adds MT_ variables (the translation cache
    is off unless ``MT_CACHE_SIZE`` is given, as in ``settings_for``). The process's stderr
    (its JSON log) goes to ``log_dir/service.log``. It is killed at the end if still running.
    """
    port = free_port()
    log = log_dir / "service.log"
    environment = {**os.environ, "MT_MODELS_DIR": str(models_dir), "MT_DEVICE": "cpu", "MT_THREADS": "1",
                   "MT_WARMUP": "false", "MT_CACHE_SIZE": "0", **env}
    argv = (prefix or [sys.executable, "-m", "service"]) + ["serve", "--port", str(port)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(argv, cwd=cwd or Path(__file__).resolve().parent.parent, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    process.log = log  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
        return False

    try:
        wait_until(ready, "the service to be ready", timeout=120)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
