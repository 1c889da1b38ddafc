"""End to end: ``python -m service serve`` in a subprocess, driven by the libretranslatepy client."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docx
import httpx
import pytest
from conftest import REPO
from libretranslatepy import LibreTranslateAPI
from service_helpers import metric_value, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def service_process(models_dir: Path, log_path: Path, **env) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m service serve`` as ``make serve`` runs it; yields (url, process) once it is ready."""
    port = free_port()
    environment = {**os.environ, "MT_MODELS_DIR": str(models_dir), "MT_DEVICE": "cpu", "MT_THREADS": "1", **env}
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
                                    str(port)], cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            def ready() -> bool:
                assert process.poll() is None, log_path.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
                return False

            wait_until(ready, "the service to become ready", timeout=90)
            yield url, process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="module")
def service(served_models_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("e2e") / "service.log"
    with service_process(served_models_dir, log_path) as (url, _):
        yield url, log_path


def test_libretranslate_client_translates(service):
    url, _ = service
    client = LibreTranslateAPI(url)
    text = client.translate("Ein Hund rennt über die Wiese.", "de", "en")
    assert isinstance(text, str) and text and text != "Ein Hund rennt über die Wiese."
    assert client.translate("  ", "de", "en") == "  "
    assert isinstance(client.translate("Ein Hund.", "auto", "en"), str)
    assert isinstance(LibreTranslateAPI(url, api_key="any-key").translate("Ein Hund.", "de", "en"), str)


def test_libretranslate_client_languages_and_detect(service):
    url, _ = service
    client = LibreTranslateAPI(url)
    languages = {entry["code"]: entry for entry in client.languages()}
    assert languages["de"] == {"code": "de", "name": "German", "targets": ["en"]}
    assert languages["en"]["targets"] == ["de"]
    detected = client.detect("A young man is riding a bicycle down the street.")
    assert detected[0]["language"] == "en" and 0 <= detected[0]["confidence"] <= 100


def test_libretranslate_client_sees_libretranslate_errors(service):
    url, _ = service
    with pytest.raises(urllib.error.HTTPError) as error:
        LibreTranslateAPI(url).translate("Hallo", "de", "xx")
    assert error.value.code == 400
    assert "xx" in json.loads(error.value.read())["error"]


def test_parameters_in_the_query_string_as_some_clients_send_them(service):
    """POST /translate?q=...&source=...&target=... with an empty body (urllib, as libretranslatepy's own calls are
    made), and the client's form body for comparison."""
    url, _ = service
    text = "Zwei Hunde spielen im Schnee."
    params = urllib.parse.urlencode({"q": text, "source": "de", "target": "en"})
    with urllib.request.urlopen(urllib.request.Request(f"{url}/translate?{params}", data=b"", method="POST"),
                                timeout=60) as answer:
        assert json.loads(answer.read())["translatedText"] == LibreTranslateAPI(url).translate(text, "de", "en")


def test_file_translation_end_to_end(service):
    """libretranslatepy 2.1.4 has no file call, so the upload is a plain multipart POST (as LibreTranslate's web
    page sends it) and the download a plain GET of translatedFileUrl; the text must match the client's."""
    url, _ = service
    text = "Ein Hund rennt über die Wiese."
    document = docx.Document()
    document.add_paragraph(text, style="Title")
    upload = io.BytesIO()
    document.save(upload)
    response = httpx.post(f"{url}/translate_file", data={"source": "de", "target": "en"}, timeout=60,
                          files={"file": ("Wiese.docx", upload.getvalue())})
    assert response.status_code == 200, response.text
    file_url = response.json()["translatedFileUrl"]
    assert file_url.startswith(f"{url}/download_file/") and file_url.endswith(".Wiese_en.docx")
    with urllib.request.urlopen(file_url, timeout=60) as answer:
        assert answer.headers["Content-Disposition"] == 'attachment; filename="Wiese_en.docx"'
        translated = docx.Document(io.BytesIO(answer.read()))
    assert translated.paragraphs[0].style.name == "Title"
    assert translated.paragraphs[0].text == LibreTranslateAPI(url).translate(text, "de", "en")
    settings = httpx.get(f"{url}/frontend/settings").json()
    assert settings["filesTranslation"] is True and ".docx" in settings["supportedFilesFormat"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_logs_are_json_lines_without_request_text(service):
    url, log_path = service
    httpx.post(f"{url}/translate", data={"q": "Vertraulicher Inhalt.", "source": "de", "target": "en"},
               headers={"X-Request-ID": "e2e-log-check"})

    def logged() -> bool:
        return "e2e-log-check" in log_path.read_text()

    wait_until(logged, "the request log line")
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    request = next(r for r in records if r.get("request_id") == "e2e-log-check")
    assert request["status"] == 200 and request["msg"] == "request" and request["sentences"] == 1
    assert "Vertraulicher" not in log_path.read_text()


def test_sigterm_lets_in_flight_requests_finish(served_models_dir, tmp_path):
    # A long batching wait (the request-level batcher's) keeps the request queued, so SIGTERM surely arrives while
    # it is in flight, and the poll below cannot miss the queued moment on a loaded machine (1.5 s once could).
    texts = [f"Ein Hund rennt {n} Mal um das Haus." for n in range(8)]
    with service_process(served_models_dir, tmp_path / "service.log", MT_SCHEDULER="batch",
                         MT_MAX_WAIT_MS="10000") as (url, process):
        outcome = {}

        def call() -> None:
            outcome["response"] = httpx.post(f"{url}/v1/translate", timeout=60,
                                             json={"texts": texts, "source": "de", "target": "en"})

        caller = threading.Thread(target=call)
        caller.start()
        wait_until(lambda: metric_value(httpx.get(f"{url}/metrics").text, "mt_queue_depth_sentences") == len(texts),
                   "the request to be queued")
        process.send_signal(signal.SIGTERM)
        caller.join(60)
        assert process.wait(60) == 0
    response = outcome["response"]
    assert response.status_code == 200
    assert len(response.json()["translations"]) == len(texts)
    log = (tmp_path / "service.log").read_text()
    assert "draining the batch queue" in log
