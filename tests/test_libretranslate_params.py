"""LibreTranslate parity over real HTTP: every parameter convention (JSON, urlencoded form, multipart, query string,
a mix) on /translate and /detect with LibreTranslate's precedence and error wording; /frontend/settings, /suggest,
/health and /spec."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import httpx
import pytest
from service_helpers import running_service

LIMITS = {"max_texts": 5, "max_text_chars": 300, "max_request_chars": 1000, "max_body_bytes": 8192,
          "max_beam_size": 4}
KEY = "alpha-key-0123456789"
TEXT, OTHER = "Ein Hund rennt über die Wiese.", "Zwei Frauen sitzen auf einer Bank."


@pytest.fixture(scope="module")
def server(served_models_dir):
    with running_service(served_models_dir, **LIMITS) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def keyed(served_models_dir):
    with running_service(served_models_dir, api_keys=[KEY], auth_failures_per_minute=0, **LIMITS) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def reference(client):
    """What JSON /translate answers for a text (the other conventions must answer the same)."""
    cache: dict[str, str] = {}

    def translate(text: str) -> str:
        if text not in cache:
            response = client.post("/translate", json={"q": text, "source": "de", "target": "en"})
            assert response.status_code == 200, response.text
            cache[text] = response.json()["translatedText"]
        return cache[text]

    return translate


def query(**params) -> str:
    return urllib.parse.urlencode(params, doseq=True)


def assert_error(response: httpx.Response, status: int, message: str, exact: bool = True) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    error = response.json()["error"]
    assert error == message if exact else error.startswith(message), error


# ---- /translate: each convention ---------------------------------------------------------------------------------

FIELDS = {"q": TEXT, "source": "de", "target": "en"}


@pytest.mark.parametrize("convention", ["json", "urlencoded", "multipart", "query-no-content-type",
                                        "query-empty-form", "query-empty-json", "query-text-plain"])
def test_translate_reads_every_parameter_convention(client, reference, convention):
    send = {
        "json": lambda: client.post("/translate", json=FIELDS),
        "urlencoded": lambda: client.post("/translate", data=FIELDS),
        "multipart": lambda: client.post("/translate", files={k: (None, v) for k, v in FIELDS.items()}),
        # the parameters in the query string and an empty body, as some LibreTranslate clients send them
        "query-no-content-type": lambda: client.post(f"/translate?{query(**FIELDS)}"),
        "query-empty-form": lambda: client.post(f"/translate?{query(**FIELDS)}", content=b"",
                                                headers={"content-type": "application/x-www-form-urlencoded"}),
        "query-empty-json": lambda: client.post(f"/translate?{query(**FIELDS)}", content=b"",
                                                headers={"content-type": "application/json"}),
        "query-text-plain": lambda: client.post(f"/translate?{query(**FIELDS)}", content=b"  \n",
                                                headers={"content-type": "text/plain"}),
    }[convention]
    response = send()
    assert response.status_code == 200, response.text
    assert response.json() == {"translatedText": reference(TEXT)}


def test_translate_with_urllib_and_the_query_string_only(server, reference):
    """The standard library's urllib, POST with no body at all (Content-Length: 0), as a shell script's curl -X POST."""
    request = urllib.request.Request(f"{server}/translate?{query(**FIELDS)}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert json.loads(answer.read()) == {"translatedText": reference(TEXT)}


def test_translate_mixes_the_query_string_with_a_body(client, reference):
    as_json = client.post(f"/translate?{query(source='de', target='en')}", json={"q": TEXT})
    as_form = client.post(f"/translate?{query(q=TEXT)}", data={"source": "de", "target": "en"})
    as_multipart = client.post(f"/translate?{query(target='en')}", files={"q": (None, TEXT), "source": (None, "de")})
    for response in (as_json, as_form, as_multipart):
        assert response.status_code == 200, response.text
        assert response.json() == {"translatedText": reference(TEXT)}


def test_translate_precedence_json_over_query_and_query_over_form(client, reference):
    """LibreTranslate: a JSON body's fields (the query string only fills gaps); for forms Flask's request.values,
    the query string before the form."""
    json_wins = client.post(f"/translate?{query(q=OTHER, source='xx')}", json=FIELDS)
    assert json_wins.json() == {"translatedText": reference(TEXT)}
    query_wins = client.post(f"/translate?{query(q=TEXT, source='de')}", data={"q": OTHER, "source": "xx",
                                                                              "target": "en"})
    assert query_wins.json() == {"translatedText": reference(TEXT)}
    multipart = client.post(f"/translate?{query(q=TEXT)}", files={"q": (None, OTHER), "source": (None, "de"),
                                                                "target": (None, "en")})
    assert multipart.json() == {"translatedText": reference(TEXT)}


def test_translate_list_from_repeated_query_or_form_fields(client, reference):
    listed = client.post(f"/translate?{query(q=[TEXT, OTHER], source='de', target='en')}")
    assert listed.json() == {"translatedText": [reference(TEXT), reference(OTHER)]}
    form = client.post("/translate", data={"q": [TEXT, OTHER], "source": "de", "target": "en"})
    assert form.json() == listed.json()
    first_counts = client.post(f"/translate?{query(q=TEXT, source=['de', 'xx'], target='en')}")  # values.get: first
    assert first_counts.json() == {"translatedText": reference(TEXT)}


def test_translate_options_from_the_query_string(client):
    alternatives = client.post(f"/translate?{query(q=TEXT, source='auto', target='en', alternatives=2)}").json()
    assert isinstance(alternatives["alternatives"], list) and alternatives["detectedLanguage"]["language"] == "de"
    markup = client.post(f"/translate?{query(q='<p>Ein <b>Hund</b>.</p>', source='de', target='en', format='html')}")
    assert markup.status_code == 200 and markup.json()["translatedText"].startswith("<p>")


# ---- /translate: LibreTranslate's errors -------------------------------------------------------------------------

@pytest.mark.parametrize("send, status, message, exact", [
    (lambda c: c.post("/translate"), 400, "Invalid request: missing q parameter", True),
    (lambda c: c.post("/translate", data={"source": "de", "target": "en"}), 400,
     "Invalid request: missing q parameter", True),
    (lambda c: c.post(f"/translate?{query(q='Hallo', target='en')}"), 400,
     "Invalid request: missing source parameter", True),
    (lambda c: c.post("/translate", json={"q": "Hallo", "source": "de"}), 400,
     "Invalid request: missing target parameter", True),
    (lambda c: c.post("/translate", json={"q": "Hallo", "source": "", "target": "en"}), 400,
     "Invalid request: missing source parameter", True),
    (lambda c: c.post("/translate", json={"q": [], "source": "de", "target": "en"}), 400,
     "Invalid request: missing q parameter", False),
    (lambda c: c.post("/translate", data={"q": "Hallo", "source": "de", "target": "en", "alternatives": "abc"}), 400,
     "Invalid request: alternatives parameter is not a number", True),
    (lambda c: c.post(f"/translate?{query(q='Hallo', source='de', target='en', alternatives=9)}"), 400,
     "Invalid request: alternatives parameter must be <= 3", True),
    (lambda c: c.post("/translate", data={"q": "Hallo", "source": "de", "target": "en", "format": "xml"}), 400,
     "xml format is not supported", False),
    (lambda c: c.post("/translate", json=["not", "a", "dict"]), 400, "Invalid JSON format", False),
    (lambda c: c.post("/translate", json={"q": "Hallo", "source": "de", "target": "zz"}), 400,
     "target language 'zz' is not supported", False),
])
def test_translate_errors_in_libretranslate_words(client, send, status, message, exact):
    assert_error(send(client), status, message, exact)


def test_translate_wrong_method(client):
    assert client.get(f"/translate?{query(**FIELDS)}").status_code == 405


# ---- /detect -----------------------------------------------------------------------------------------------------

ENGLISH = "A man is sitting on a bench in the park."


@pytest.mark.parametrize("convention", ["json", "urlencoded", "multipart", "query", "query-and-json", "query-and-form"])
def test_detect_reads_every_parameter_convention(client, convention):
    reference = client.post("/detect", json={"q": ENGLISH}).json()
    assert reference[0]["language"] == "en"
    response = {
        "json": lambda: client.post("/detect", json={"q": ENGLISH}),
        "urlencoded": lambda: client.post("/detect", data={"q": ENGLISH}),
        "multipart": lambda: client.post("/detect", files={"q": (None, ENGLISH)}),
        "query": lambda: client.post(f"/detect?{query(q=ENGLISH)}"),
        "query-and-json": lambda: client.post(f"/detect?{query(q=ENGLISH)}", json={"unrelated": 1}),
        "query-and-form": lambda: client.post(f"/detect?{query(q=ENGLISH)}", data={"q": "Ein Hund rennt."}),
    }[convention]()
    assert response.status_code == 200, response.text
    assert response.json() == reference


def test_detect_errors_in_libretranslate_words(client):
    assert_error(client.post("/detect"), 400, "Invalid request: missing q parameter")
    assert_error(client.post("/detect", data={"q": ""}), 400, "Invalid request: missing q parameter")
    assert_error(client.post("/detect", json={"q": 5}), 400, "Invalid request: q must be a string, not a number")
    assert client.get("/detect").status_code == 405


# ---- API keys in every convention --------------------------------------------------------------------------------

def test_api_key_from_the_query_string_form_or_json(keyed):
    def refused(response: httpx.Response, status: int, words: str) -> bool:
        return response.status_code == status and words in response.json()["error"]

    assert refused(keyed.post(f"/translate?{query(**FIELDS)}"), 401, "API key is required")
    assert keyed.post(f"/translate?{query(**FIELDS, api_key=KEY)}").status_code == 200
    assert keyed.post(f"/translate?{query(api_key=KEY)}", json=FIELDS).status_code == 200  # a mix
    assert keyed.post(f"/translate?{query(api_key=KEY)}", data=FIELDS).status_code == 200
    assert keyed.post("/detect", files={"q": (None, ENGLISH), "api_key": (None, KEY)}).status_code == 200
    assert keyed.post(f"/detect?{query(q=ENGLISH, api_key=KEY)}").status_code == 200
    assert refused(keyed.post(f"/detect?{query(q=ENGLISH, api_key='wrong-key-0123456789')}"), 403, "invalid API key")
    # the key is checked before the fields: a keyless client learns nothing about them
    assert refused(keyed.post("/translate?alternatives=abc"), 401, "API key is required")


# ---- /frontend/settings, /suggest, /health, /spec ----------------------------------------------------------------

def test_frontend_settings(client, keyed):
    settings = client.get("/frontend/settings").json()
    assert settings == {
        "charLimit": 300, "frontendTimeout": 500, "apiKeys": False, "keyRequired": False, "suggestions": False,
        "filesTranslation": True, "supportedFilesFormat": [".txt", ".html", ".srt", ".docx", ".odt"],
        "language": {"source": {"code": "auto", "name": "Auto Detect"}, "target": {"code": "en", "name": "English"}}}
    german = client.get("/frontend/settings", headers={"Accept-Language": "fr-FR, de-AT;q=0.8, en;q=0.5"}).json()
    assert german["language"]["target"] == {"code": "de", "name": "German"}  # French is not served
    assert client.get("/frontend/settings", headers={"Accept-Language": "fr, *;q=0.1"}).json()["language"][
        "target"]["code"] == "en"
    with_keys = keyed.get("/frontend/settings").json()  # needs no key
    assert with_keys["apiKeys"] is True and with_keys["keyRequired"] is True


def test_frontend_settings_without_files(served_models_dir):
    with running_service(served_models_dir, files_translation=False) as url:
        settings = httpx.get(f"{url}/frontend/settings").json()
        assert settings["filesTranslation"] is False and settings["supportedFilesFormat"] == []
        refused = httpx.post(f"{url}/translate_file", data={"source": "de", "target": "en"},
                             files={"file": ("a.txt", b"Ein Hund.")})
        assert_error(refused, 403, "Files translation are disabled on this server.")
        assert_error(httpx.get(f"{url}/download_file/anything.txt"), 400,
                     "Files translation are disabled on this server.")


@pytest.mark.parametrize("send", [
    lambda c: c.post("/suggest", data={"q": "Hallo", "s": "Hello", "source": "de", "target": "en"}),
    lambda c: c.post("/suggest", json={"q": "Hallo", "s": "Hello", "source": "de", "target": "en"}),
    lambda c: c.post(f"/suggest?{query(q='Hallo', s='Hello', source='de', target='en')}"),
    lambda c: c.post("/suggest"),
])
def test_suggest_is_disabled_as_libretranslate_answers_by_default(client, keyed, send):
    """LibreTranslate without --suggestions: 403 before looking at the request (no key needed to be told)."""
    assert_error(send(client), 403, "Suggestions are disabled on this server.")
    assert_error(send(keyed), 403, "Suggestions are disabled on this server.")


def test_health_and_spec(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert client.post("/health").status_code == 405
    spec = client.get("/spec").json()
    assert spec == client.get("/openapi.json").json()
    assert {"/translate", "/translate_file", "/download_file/{filename}", "/detect", "/languages",
            "/frontend/settings", "/suggest", "/health"} <= set(spec["paths"])
    body = spec["paths"]["/translate_file"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["format"] == "binary"
