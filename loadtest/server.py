"""The service as a subprocess on a free loopback port, for load tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def models_folder(paths: list[Path], folder: Path) -> Path:
    """A models folder holding (symlinks to) the given model directories, named by their folder names."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / path.resolve().name
        if not link.exists():
            link.symlink_to(path.resolve(), target_is_directory=True)
    return folder


class ServiceProcess:
    """``python -m service serve`` with MT_ settings; ``start`` waits until /health/ready answers 200.

    Its output goes to ``log_path`` (a pipe could fill up and stall it during a long run).
    """

    def __init__(self, models_dir: Path, log_path: Path, env: dict[str, str] | None = None,
                 python: str = sys.executable) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # The cache is off unless asked for: the load mixes repeat sentences, and the figures measure decoding.
        self.env = {**os.environ, "MT_MODELS_DIR": str(models_dir), "MT_DEVICE": "cpu", "MT_CACHE_SIZE": "0",
                    **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.python = python
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 600) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.python, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"the service was not ready after {timeout_s} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the service process so far (Linux /proc)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return response.read().decode()

    def stop(self, timeout_s: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *_) -> None:
        self.stop()
