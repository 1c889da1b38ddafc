"""Soak run: many thousands of mixed requests against `python -m service serve`, watching the server's memory.

    python scripts/soak.py --models-dir models --requests 20000 --concurrency 16

Starts the service as a subprocess on a free loopback port, waits until it is ready, then sends a fixed,
seeded mix of requests from ``--concurrency`` threads, each on its own keep-alive connection: LibreTranslate
JSON and form, lists, HTML, `source: auto`, the native API with n-best, scores and attention, /detect, and
requests that are refused (unknown language, too many texts, invalid JSON), and requests whose client hangs
up right after sending them (cancellations: their queued work must be withdrawn). Every ``--sample-every``
requests it reads the server's resident set size (VmRSS from /proc, so Linux only) and prints a row.

A leak shows as RSS that keeps growing after the warm-up: the summary reports RSS at start (ready, idle),
after the warm-up share of the requests, and at the end, the growth after warm-up, and the slope over the
second half (MiB per 1000 requests). Allocator caches and onnxruntime arenas grow during the first
requests of each new shape; that is why the growth is measured from the end of the warm-up.
``--fail-above-mib N`` / ``--fail-above-pct P`` make the exit status 1 when the growth after warm-up exceeds
N MiB / P percent, or when the service is not ready at the end; tests/test_soak.py (``make test-soak``, run
by CI) runs it that way.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SENTENCES = [
    "Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau singt auf einer Bühne.",
    "Ein kleines Mädchen klettert auf ein Klettergerüst.", "Drei Männer stehen vor einem Gebäude und reden.",
    "Ein Hund rennt mit einem Stock im Maul über eine Wiese.", "Leute sitzen in einem Restaurant.",
    "Ein Junge springt in einen See.", "Eine Gruppe von Menschen wartet an einer Bushaltestelle im Regen.",
    "Ein Arbeiter repariert eine Straße.",
]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def text(rng: random.Random, sentences: int) -> str:
    return " ".join(rng.choice(SENTENCES) for _ in range(sentences))


CANCEL = ()  # the acceptable statuses of a request whose client hangs up: none is read


def make_request(rng: random.Random) -> tuple[str, str, bytes, tuple[int, ...]]:
    """(path, content type, body, acceptable statuses; CANCEL: hang up after sending) of one request."""
    kind = rng.random()
    json_type = "application/json"
    if kind < 0.30:
        body = {"q": text(rng, rng.randint(1, 3)), "source": "de", "target": "en"}
    elif kind < 0.40:
        form = urllib.parse.urlencode({"q": text(rng, 1), "source": "auto", "target": "en"}).encode()
        return "/translate", "application/x-www-form-urlencoded", form, (200,)
    elif kind < 0.50:
        body = {"q": [text(rng, 1) for _ in range(rng.randint(2, 8))], "source": "de", "target": "en"}
    elif kind < 0.58:
        body = {"q": f"<p class='x'>{text(rng, 1)} <b>{text(rng, 1)}</b></p><script>var a = 1;</script>",
                "source": "de", "target": "en", "format": "html"}
    elif kind < 0.80:
        beam = rng.choice([1, 2, 4])
        body = {"texts": [text(rng, rng.randint(1, 2)) for _ in range(rng.randint(1, 3))], "source": "de",
                "target": "en", "beam_size": beam, "n_best": rng.randint(1, beam), "return_scores": True,
                "return_attention": rng.random() < 0.5}
        return "/v1/translate", json_type, json.dumps(body).encode(), (200,)
    elif kind < 0.88:
        return "/detect", json_type, json.dumps({"q": text(rng, 1)}).encode(), (200,)
    elif kind < 0.93:
        body = {"q": text(rng, 1), "source": "de", "target": "xx"}
        return "/translate", json_type, json.dumps(body).encode(), (400,)
    elif kind < 0.97:
        return "/translate", json_type, b'{"q": "Ein Hund", "source": ', (400,)
    elif kind < 0.985:
        body = {"texts": [text(rng, 1)] * 100, "target": "en"}
        return "/v1/translate", json_type, json.dumps(body).encode(), (400,)
    else:
        body = {"texts": [text(rng, 2) for _ in range(3)], "source": "de", "target": "en", "beam_size": 4}
        return "/v1/translate", json_type, json.dumps(body).encode(), CANCEL
    return "/translate", json_type, json.dumps(body).encode(), (200,)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sample-every", type=int, default=1000)
    parser.add_argument("--warmup-share", type=float, default=0.1, help="share of the requests before the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-size", type=int, default=0, help="the server's MT_CACHE_SIZE (default 0: the mix "
                        "repeats its sentences, so a cache would answer most of them and decoding would go unsoaked)")
    parser.add_argument("--json", type=Path, help="also write the samples and summary here")
    parser.add_argument("--fail-above-mib", type=float, help="exit 1 if RSS grows more than this after warm-up")
    parser.add_argument("--fail-above-pct", type=float, help="exit 1 if RSS grows more than this percentage after "
                                                             "warm-up")
    args = parser.parse_args()

    port = free_port()
    env = {**os.environ, "MT_MODELS_DIR": str(args.models_dir), "MT_LOG_LEVEL": "WARNING",
           "MT_MAX_QUEUE_SENTENCES": str(max(2048, args.concurrency * 200)),
           "MT_CACHE_SIZE": str(args.cache_size)}
    log = tempfile.NamedTemporaryFile(prefix="soak-server-", suffix=".log", delete=False)
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port)], cwd=REPO, env=env,
                              stderr=log)
    try:
        return soak(args, server, port, Path(log.name))
    finally:
        server.terminate()
        server.wait(60)
        log.close()


def wait_ready(port: int, server: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited with status {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health/ready")
            if connection.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def logged_errors(log: Path) -> list[str]:
    """The server's log records at level error or above (a hang-up or refusal must never produce one)."""
    records = [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    return [record["msg"][:200] for record in records if record.get("level") in ("error", "critical")]


def soak(args: argparse.Namespace, server: subprocess.Popen, port: int, log: Path) -> int:
    if not wait_ready(port, server, timeout=300):
        raise SystemExit("the service did not become ready in 300 s")

    rng = random.Random(args.seed)
    plan = [make_request(rng) for _ in range(args.requests)]
    lock = threading.Lock()
    done = 0
    statuses: dict[int, int] = {}
    unexpected: list[str] = []
    samples = [(0, rss_mib(server.pid), 0.0)]
    started = time.monotonic()
    print(f"{'requests':>9} {'RSS MiB':>8} {'seconds':>8}", flush=True)
    print(f"{0:>9} {samples[0][1]:>8.1f} {0:>8.1f}", flush=True)
    work = iter(plan)

    def worker() -> None:
        nonlocal done
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                item = next(work, None)
            if item is None:
                return
            path, content_type, body, expected = item
            if expected == CANCEL:  # on its own connection, closed as soon as the request is sent
                hang_up = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                hang_up.request("POST", path, body, {"Content-Type": content_type})
                hang_up.close()
                status = "cancelled"
            else:
                connection.request("POST", path, body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                status = response.status
            with lock:
                done += 1
                statuses[status] = statuses.get(status, 0) + 1
                if status != "cancelled" and status not in expected and status != 429:
                    unexpected.append(f"{path} {status}")
                if done % args.sample_every == 0 or done == args.requests:
                    samples.append((done, rss_mib(server.pid), time.monotonic() - started))
                    print(f"{done:>9} {samples[-1][1]:>8.1f} {samples[-1][2]:>8.1f}", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    warm = next(s for s in samples if s[0] >= args.warmup_share * args.requests)
    half = next(s for s in samples if s[0] >= args.requests / 2)
    end = samples[-1]
    slope = (end[1] - half[1]) / max(1, end[0] - half[0]) * 1000
    ready_after = wait_ready(port, server, timeout=60)
    summary = {"requests": args.requests, "concurrency": args.concurrency, "seconds": round(end[2], 1),
               "statuses": statuses, "unexpected": len(unexpected), "rss_start_mib": round(samples[0][1], 1),
               "rss_after_warmup_mib": round(warm[1], 1), "warmup_requests": warm[0],
               "rss_end_mib": round(end[1], 1), "growth_after_warmup_mib": round(end[1] - warm[1], 1),
               "growth_after_warmup_pct": round(100 * (end[1] - warm[1]) / warm[1], 2),
               "second_half_mib_per_1000_requests": round(slope, 3), "ready_at_the_end": ready_after,
               "server_errors_logged": len(errors := logged_errors(log))}
    print(json.dumps(summary, indent=2))
    if unexpected:
        print("unexpected statuses (first 10):", unexpected[:10])
    if errors:
        print("server errors (first 5):", errors[:5])
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    too_much = ((args.fail_above_mib is not None and end[1] - warm[1] > args.fail_above_mib)
                or (args.fail_above_pct is not None and summary["growth_after_warmup_pct"] > args.fail_above_pct))
    return 1 if unexpected or errors or too_much or not ready_after else 0


if __name__ == "__main__":
    sys.exit(main())
