"""Bad input, systematically, on both APIs: every case gets a clear 4xx JSON error or a correct translation.

Each content case is sent four ways where the transport can express it: LibreTranslate JSON, LibreTranslate
form, LibreTranslate multipart, and the native JSON API. A case passes when the response is either the
expected 4xx with a body of exactly ``{"error": "<message naming the problem>"}``, or a 200 whose
translations are right (blank texts unchanged, letterless texts copied, others translated). Never a 5xx,
never a hang (every request has a client timeout), never a dead server (readiness is checked at the end).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from service_helpers import serve_in_thread, started_engine, wait_until

from inference.translator import Translation
from service.api import create_app
from service.engine import TranslationJob

LIMITS = {"max_texts": 4, "max_text_chars": 300, "max_request_chars": 600, "max_body_bytes": 4096,
          "max_beam_size": 4, "max_wait_ms": 0}
APIS = ["libre-json", "libre-form", "libre-multipart", "native"]


@pytest.fixture(scope="module")
def models_dir(served_models_dir, tmp_path_factory):
    """de-en, en-de and fr-en (a relabelled copy), so that fr -> de is a pair of served languages that no
    model serves."""
    root = tmp_path_factory.mktemp("bad-input") / "models"
    shutil.copytree(served_models_dir, root)
    shutil.copytree(root / "de-en", root / "fr-en")
    card_path = root / "fr-en" / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card.update(id="fr-en", source_language="fr", target_language="en")
    card_path.write_text(json.dumps(card), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def engine(models_dir):
    with started_engine(models_dir, **LIMITS) as engine:
        yield engine


@pytest.fixture(scope="module")
def client(engine):
    with serve_in_thread(create_app(engine.settings, engine)) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http
        # Whatever was thrown at it, the service still answers and translates.
        assert http.get("/health/ready").status_code == 200
        assert http.post("/translate", json={"q": "Ein Hund.", "source": "de", "target": "en"}).status_code == 200


@pytest.fixture(scope="module")
def alone(client):
    """The translation of one text sent on its own (what a correct 200 must contain), through the native API
    or (``via="libre"``) the LibreTranslate one: a case sent to one API is checked against the other, so the
    reference never comes from the path under test."""
    cache: dict[tuple[str, str, str, str], str] = {}

    def translate(text: str, source: str = "de", target: str = "en", via: str = "native") -> str:
        if (text, source, target, via) not in cache:
            if via == "native":
                response = client.post("/v1/translate", json={"texts": [text], "source": source, "target": target})
                assert response.status_code == 200, response.text
                cache[text, source, target, via] = response.json()["translations"][0]["text"]
            else:
                response = client.post("/translate", json={"q": text, "source": source, "target": target})
                assert response.status_code == 200, response.text
                cache[text, source, target, via] = response.json()["translatedText"]
        return cache[text, source, target, via]

    return translate


# ---- sending one content case through each API ------------------------------------------------------------------

MISSING = object()  # a field left out of the request


@dataclass
class Case:
    """What to send (``q`` is a text or a list of texts) and what must come back."""

    id: str
    q: Any
    source: Any = "de"
    target: Any = "en"
    extra: dict = field(default_factory=dict)  # further fields, per API name or for all ("*")
    status: int = 200
    words: str = ""  # a regular expression the error message must match
    apis: tuple[str, ...] = tuple(APIS)


def send(client: httpx.Client, api: str, case: Case) -> httpx.Response:
    extra = {**case.extra.get("*", {}), **case.extra.get(api.split("-")[0], {})}
    if api == "native":
        texts = case.q if isinstance(case.q, list) or case.q is MISSING else [case.q]
        body = {"texts": texts, "source": case.source, "target": case.target, **extra}
        return post_json(client, "/v1/translate", {k: v for k, v in body.items() if v is not MISSING})
    body = {"q": case.q, "source": case.source, "target": case.target, **extra}
    body = {k: v for k, v in body.items() if v is not MISSING}
    if api == "libre-json":
        return post_json(client, "/translate", body)
    fields = [(k, v) for k, values in body.items() for v in (values if isinstance(values, list) else [values])]
    if api == "libre-form":
        return client.post("/translate", data=dict(_group(fields)))
    return client.post("/translate", files=[(k, (None, str(v))) for k, v in fields])  # multipart/form-data


def post_json(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    """JSON as ASCII, with escapes: it can carry what UTF-8 cannot (lone surrogates such as "\\ud800")."""
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def _group(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    grouped: dict[str, Any] = {}
    for key, value in fields:
        grouped.setdefault(key, []).append(value)
    return {k: v if len(v) > 1 else v[0] for k, v in grouped.items()}


def translations(api: str, response: httpx.Response) -> list[str]:
    body = response.json()
    if api == "native":
        return [item["text"] for item in body["translations"]]
    out = body["translatedText"]
    return out if isinstance(out, list) else [out]


def assert_error(response: httpx.Response, status: int, words: str = "") -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert re.search(words, body["error"], re.IGNORECASE), body["error"]


def expected_text(text: str, alone) -> str:
    """Blank texts come back unchanged, letterless ones are copied, everything else is translated."""
    if not any(ch.isalpha() for ch in text):
        return text
    return alone(text)


# ---- the content matrix -----------------------------------------------------------------------------------------

LONG = "Ein Hund rennt. " * 19  # 304 characters: over max_text_chars (300)
CONTENT_CASES = [
    # blank and empty
    Case("empty-text", ""),
    Case("whitespace-only", "  \n\t  "),
    Case("list-with-empty-items", ["Ein Hund rennt.", "", "   ", "\n"]),
    Case("empty-list", [], status=400, words="empty|at least 1", apis=("libre-json", "native")),
    # limits
    Case("text-over-char-limit", LONG, status=400, words="characters"),
    Case("text-at-char-limit", LONG[:300]),
    Case("list-over-item-limit", ["Ein Hund."] * 5, status=400, words="too many texts"),
    Case("request-over-char-limit", ["Ein Hund rennt schnell. " * 12] * 3, status=400, words="characters"),
    # characters
    Case("nul-and-control-characters", "Ein\x00 Hund\x07 rennt.\x1b[31m Eine\x7f Katze\x0b schläft.\r\n"),
    Case("only-control-characters", "\x00\x01\x02\x1f"),
    Case("emoji", "Ein Hund 🐶 rennt. 👍🏽 Zwei Katzen 👨‍👩‍👧 spielen."),
    Case("emoji-only", "🐶👍🏽👨‍👩‍👧"),
    Case("cjk", "一只狗在公园里跑。猫在睡觉。"),
    Case("right-to-left", "كلب يركض في الحديقة. כלב רץ בפארק."),
    Case("bidi-controls", "Ein \u202eHund\u202c rennt.\u200f\u200b"),
    Case("combining-and-zalgo", "Ein H\u0336u\u0337n\u0338d rennt." + "\u0301" * 50),
    Case("lone-surrogate", "Ein Hund \ud800 rennt.", status=400, words="unicode", apis=("libre-json", "native")),
    Case("lone-surrogate-in-list", ["Ein Hund.", "\udfff"], status=400, words="text 1.*unicode",
         apis=("libre-json", "native")),
    Case("lone-surrogate-in-language-code", "Hallo", source="d\ud800", status=400, words="source",
         apis=("libre-json", "native")),
    Case("word-without-spaces", "Donaudampfschifffahrt" * 14),
    Case("many-tiny-sentences", "A. " * 99),
    # languages
    Case("unknown-source", "Hallo", source="xx", status=400, words="'xx'"),
    Case("unknown-target", "Hallo", target="xx", status=400, words="'xx'"),
    Case("empty-source-code", "Hallo", source="", status=400, words="source"),
    Case("huge-language-code", "Hallo", source="d" * 1000, status=400, words="source"),
    Case("source-equals-target", "Hallo", source="en", target="en", status=400, words="both en"),
    Case("region-subtags-accepted", "Ein Hund.", source="de-AT", target="EN_us"),
    Case("unserved-target", "Hallo", target="fr", status=400, words="'fr'"),
    Case("unserved-pair", "Bonjour", source="fr", target="de", status=400, words="fr to de is not served"),
    Case("auto-target", "Hallo", target="auto", status=400, words="target"),
    Case("missing-source", "Ein Hund.", source=MISSING, status=400, words="source",
         apis=("libre-json", "libre-form", "libre-multipart")),
    Case("missing-target", "Hallo", target=MISSING, status=400, words="target"),
    Case("missing-text", MISSING, status=400, words="q", apis=("libre-json", "libre-form", "libre-multipart")),
    Case("missing-texts", MISSING, status=400, words="texts", apis=("native",)),
    # options out of range
    *[Case(f"beam-size-{v!r}", "Hallo", extra={"native": {"beam_size": v}}, status=400, words="beam_size",
           apis=("native",)) for v in (0, -1, 5, 10**30, 2.5, "many", [2])],
    *[Case(f"n-best-{v!r}", "Hallo", extra={"native": {"n_best": v}}, status=400, words="n_best", apis=("native",))
      for v in (0, 5, 10**30)],
    *[Case(f"alternatives-{v!r}", "Hallo", extra={"libre": {"alternatives": v}}, status=400, words="alternatives",
           apis=("libre-json", "libre-form")) for v in (-1, 4, 10**30, "some")],
    *[Case(f"timeout-{v!r}", "Hallo", extra={"native": {"timeout": v}}, status=400, words="timeout",
           apis=("native",)) for v in (0, -1, 0.001, 1e9, "soon")],
    Case("format-unknown", "Hallo", extra={"*": {"format": "pdf"}}, status=400, words="format"),
    # non-string and nested values
    *[Case(f"q-{name}", value, status=400, words="q", apis=("libre-json",))
      for name, value in [("int", 42), ("null", None), ("bool", True), ("object", {"a": "Hallo"}),
                          ("list-of-ints", [1, 2]), ("nested-list", [["Hallo"]]), ("list-with-null", ["a", None])]],
    *[Case(f"texts-{name}", value, status=400, words="texts", apis=("native",))
      for name, value in [("int-item", [42]), ("null-item", [None]), ("nested", [["Hallo"]]),
                          ("object-item", [{"text": "Hallo"}])]],
    Case("source-not-a-string", "Hallo", source=5, status=400, words="source", apis=("libre-json", "native")),
    Case("target-a-list", "Hallo", target=["en"], status=400, words="target", apis=("libre-json", "native")),
    Case("native-unknown-field", "Hallo", extra={"native": {"q": "Hallo"}}, status=400, words="q",
         apis=("native",)),
]


@pytest.mark.parametrize("case, api", [pytest.param(case, api, id=f"{case.id}-{api}")
                                       for case in CONTENT_CASES for api in case.apis])
def test_content(client, alone, case, api):
    response = send(client, api, case)
    if case.status != 200:
        assert_error(response, case.status, case.words)
        return
    assert response.status_code == 200, response.text
    texts = case.q if isinstance(case.q, list) else [case.q]
    source = case.source.split("-")[0].lower() if isinstance(case.source, str) else "de"
    got = translations(api, response)
    assert len(got) == len(texts)
    for text, translated in zip(texts, got):
        if not text.strip():
            assert translated == text
        else:
            via = "libre" if api == "native" else "native"
            assert translated == expected_text(text, lambda t: alone(t, source, "en", via))


# ---- bodies that are not a valid request at the transport level -------------------------------------------------

def post_raw(client: httpx.Client, path: str, content: bytes, content_type: str | None = "application/json",
             **headers: str) -> httpx.Response:
    if content_type is not None:
        headers["content-type"] = content_type
    return client.post(path, content=content, headers=headers)


VALID = {"/translate": {"q": "Ein Hund.", "source": "de", "target": "en"},
         "/v1/translate": {"texts": ["Ein Hund."], "source": "de", "target": "en"},
         "/detect": {"q": "Ein Hund."}}
TEXT = {"/translate": "q", "/v1/translate": "texts", "/detect": "q"}  # the field holding the text
NUMBER = {"/translate": "alternatives", "/v1/translate": "timeout", "/detect": "q"}  # a numeric field (or the text)


def with_field(path: str, field_name: str, raw_value: bytes) -> bytes:
    """The valid body of ``path`` with one field's value replaced by raw JSON bytes (which may be invalid)."""
    body = dict(VALID[path], **{field_name: "@@"})
    return json.dumps(body).encode().replace(b'"@@"', raw_value)


RAW_CASES = {
    "invalid-json": (lambda p: json.dumps(VALID[p]).encode()[:-3], "application/json", "json|body"),
    "empty-body": (lambda p: b"", "application/json", ""),
    "json-array": (lambda p: json.dumps([VALID[p]]).encode(), "application/json", "object|dictionary"),
    "json-string": (lambda p: b'"Ein Hund."', "application/json", ""),
    "json-null": (lambda p: b"null", "application/json", ""),
    "invalid-utf8": (lambda p: with_field(p, TEXT[p], b'"Hallo \xff\xfe Welt \xc3\x28"'), "application/json", ""),
    "nan": (lambda p: with_field(p, NUMBER[p], b"NaN"), "application/json", NUMBER.__getitem__),
    "infinity": (lambda p: with_field(p, NUMBER[p], b"-Infinity"), "application/json", NUMBER.__getitem__),
    "huge-number": (lambda p: with_field(p, NUMBER[p], b"1e999"), "application/json", NUMBER.__getitem__),
    "deeply-nested-json": (lambda p: with_field(p, TEXT[p], b"[" * 1900 + b"]" * 1900), "application/json", ""),
    "xml": (lambda p: b"<q>Ein Hund.</q>", "application/xml", "json|content-type"),
    "multipart-without-boundary": (lambda p: b"q=Hallo", "multipart/form-data", ""),
    "garbage-multipart": (lambda p: b"--xyz\r\nContent-Disposition: form-data\r\n\r\nHallo\r\n--xyz",
                          "multipart/form-data; boundary=xyz", ""),
}


@pytest.mark.parametrize("path", ["/translate", "/v1/translate", "/detect"])
@pytest.mark.parametrize("name", RAW_CASES)
def test_malformed_bodies(client, path, name):
    make_body, content_type, words = RAW_CASES[name]
    response = post_raw(client, path, make_body(path), content_type)
    expected = 415 if path == "/v1/translate" and "json" not in content_type else 400
    assert_error(response, expected, words(path) if callable(words) else words)


@pytest.mark.parametrize("path", ["/translate", "/v1/translate", "/detect"])
def test_body_over_the_size_limit(client, path):
    declared = post_raw(client, path, b'{"q": "' + b"a" * 5000 + b'"}')
    assert_error(declared, 413, "4096 bytes")

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(10):
            yield b"a" * 1000

    streamed = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "4096 bytes")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream",
                                          "application/json; charset=utf-8"])
def test_json_with_another_or_no_content_type(client, alone, content_type):
    """LibreTranslate's /translate reads any non-form body as JSON (lenient, like LibreTranslate); the native
    API is strict and refuses (415) what is not declared as JSON."""
    body = json.dumps({"q": "Ein Hund.", "source": "de", "target": "en"}).encode()
    libre = post_raw(client, "/translate", body, content_type)
    assert libre.status_code == 200 and libre.json()["translatedText"] == alone("Ein Hund.")
    native = post_raw(client, "/v1/translate", json.dumps({"texts": ["Ein Hund."], "source": "de",
                                                            "target": "en"}).encode(), content_type)
    if content_type is not None and content_type.startswith("application/json"):
        assert native.status_code == 200
    else:
        assert_error(native, 415, "application/json")


def test_form_with_invalid_utf8_and_a_file_upload(client):
    latin1 = post_raw(client, "/translate", b"q=Hallo%FF%FE&source=de&target=en",
                      "application/x-www-form-urlencoded")
    assert latin1.status_code == 200 or latin1.status_code == 400, latin1.text
    if latin1.status_code == 400:
        assert_error(latin1, 400)
    upload = client.post("/translate", data={"source": "de", "target": "en"},
                         files={"q": ("text.txt", b"Ein Hund.", "text/plain")})
    assert_error(upload, 400, "q")


def test_wrong_methods_and_paths(client):
    assert_error(client.get("/translate"), 405)
    assert_error(client.put("/v1/translate", json={}), 405)
    assert_error(client.get("/v1/translate/extra"), 404)


def test_detect_rejects_bad_text(client):
    assert_error(post_json(client, "/detect", {"q": "Hallo \ud800"}), 400, "unicode")
    assert_error(client.post("/detect", json={"q": 5}), 400, "q")
    assert_error(client.post("/detect", json={"q": "a" * 301}), 400, "characters")
    assert client.post("/detect", json={"q": "🐶 \x00"}).status_code == 200


# ---- format=html: the output stays inert ------------------------------------------------------------------------

class Markup(HTMLParser):
    """Everything an HTML tokenizer sees in a document except its text: tags with attributes, comments,
    declarations, and the raw contents of script and style."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[tuple] = []
        self._raw: str | None = None
        self.feed(document)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tokens.append(("start", tag, tuple(attrs)))
        self._raw = tag if tag in ("script", "style") else None

    def handle_startendtag(self, tag, attrs):
        self.tokens.append(("start", tag, tuple(attrs)))

    def handle_endtag(self, tag):
        self.tokens.append(("end", tag))
        self._raw = None

    def handle_data(self, data):
        if self._raw:
            self.tokens.append(("raw", self._raw, data))

    def handle_comment(self, data):
        self.tokens.append(("comment", data))

    def handle_decl(self, decl):
        self.tokens.append(("decl", decl))

    def unknown_decl(self, data):
        self.tokens.append(("decl", data))

    def handle_pi(self, data):
        self.tokens.append(("pi", data))

    def parse_marked_section(self, i, report=1):
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:  # "<![foo]>": html.parser gives up where browsers see a bogus comment
            end = self.rawdata.find(">", i)
            if end < 0:
                return -1
            self.tokens.append(("bogus", self.rawdata[i : end + 1]))
            return end + 1


HTML_CASES = {
    "script-and-style": '<style>p { color: red }</style><p>Ein Hund.</p><script>alert("Ein Hund")</script>',
    "event-handler-attributes": '<p onclick="alert(1)">Ein Hund.</p><img src=x onerror=alert(1)>',
    "javascript-url": '<a href="javascript:alert(1)">Ein Hund rennt.</a>',
    "unclosed-tags": "<div><p>Ein <b>Hund rennt. <i>Eine Katze",
    "unbalanced-end-tags": "</p></div>Ein Hund.</b></script>",
    "misnested": "<p>Ein <b>Hund</i> rennt.</b></p>",
    "truncated-start-tag": '<p>Ein Hund.</p><div class="a',
    "bare-angle-brackets": "<<p>>Ein Hund < Katze > Maus.</p>",
    "split-script-tag": "<scr<script>ipt>alert(1)</script>",
    "comment-with-script": "<!-- <script>alert(1)</script> -->Ein Hund.",
    "cdata-and-doctype": "<!DOCTYPE html><![CDATA[<script>]]><p>Ein Hund.</p>",
    "escaped-script-as-text": "<p>&lt;script&gt;alert(1)&lt;/script&gt; Ein Hund.</p>",
    "attribute-breakout": '<p title="&quot;><script>alert(1)</script>">Ein Hund.</p>',
    "script-in-svg-and-textarea": "<svg><script>alert(1)</script></svg><textarea><script>x</script></textarea>",
    "uppercase-and-whitespace-tags": '<SCRIPT >alert(1)</SCRIPT ><P CLASS=x>Ein Hund.</P>',
    "nul-in-markup": "<p\x00 class=a>Ein\x00 Hund.</p\x00>",
    "only-markup": "<br><hr/><img src=a>",
    "unknown-marked-section": "<![foo]>Ein Hund.<![ if x]><p>Eine Katze.</p>",
    "conditional-comment": "<![if !IE]><p>Ein Hund.</p><![endif]>",
    "incomplete-declarations": "<p>Ein Hund.</p><![CDATA[x <!x <?php echo 1",
}


@pytest.mark.parametrize("api", ["libre-json", "native"])
@pytest.mark.parametrize("name", HTML_CASES)
def test_html_output_keeps_the_markup_and_adds_none(client, api, name):
    document = HTML_CASES[name]
    response = send(client, api, Case(name, document, extra={"*": {"format": "html"}}))
    assert response.status_code == 200, response.text
    out = translations(api, response)[0]
    assert Markup(out).tokens == Markup(document).tokens  # same tags, attributes, comments; script/style as sent


def test_markup_in_a_translation_is_escaped(models_dir):
    """Whatever the model writes, it can only become text: a model that emits tags gets them escaped."""
    evil = '</p><script>alert("x")</script><img src=x onerror=alert(1)>&amp;'

    class MarkupModel:
        def __init__(self, inner):
            self.inner, self.model, self.reranker = inner, inner.model, None

        def encode(self, sentence):
            return self.inner.encode(sentence)

        def search_options(self, options):
            return options

        def finish_many(self, sources, hypotheses, assess=True):
            return [[Translation(evil, -1.0, [], [], None)] for _ in sources]

    import asyncio

    with started_engine(models_dir) as engine:
        model = engine.registry.models["de-en"]
        model.translator = MarkupModel(model.translator)
        document = "<p>Ein Hund.</p><pre>Ein Hund.</pre>"
        [html_out] = asyncio.run(engine.translate(TranslationJob([document], "de", "en", format="html"))).translations
        [text_out] = asyncio.run(engine.translate(TranslationJob(["Ein Hund."], "de", "en"))).translations
    assert html_out.text == f"<p>{html.escape(evil, quote=False)}</p><pre>Ein Hund.</pre>"
    assert Markup(html_out.text).tokens == Markup(document).tokens
    assert text_out.text == evil  # format=text: plain text in, plain text out (the client must escape it)


# ---- slow clients ------------------------------------------------------------------------------------------------

def _slow_upload(url: str, declared: int = 100) -> socket.socket:
    """A connection that sends headers promising ``declared`` body bytes, then one byte only."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {declared}\r\n\r\n{{".encode())
    return sock


def _holding_connection(url: str) -> socket.socket:
    """A slow upload the server has accepted and is waiting on (not one it refused at a cap still full of
    connections that are closing)."""
    for _ in range(100):
        sock = _slow_upload(url, declared=10_000)
        sock.settimeout(0.3)
        try:
            sock.recv(1)
        except TimeoutError:
            sock.settimeout(30)
            return sock
        sock.close()
        time.sleep(0.1)
    raise AssertionError("the server never accepted a slow upload")


def test_a_slow_upload_gets_408_and_a_connection_cap_refuses_the_rest(served_models_dir, tmp_path):
    """A client that never finishes its body is cut off after MT_BODY_TIMEOUT_S with 408 (its memory freed);
    with MT_MAX_CONNECTIONS reached by such clients, a new connection is refused at once with 503."""
    from service_helpers import service_process

    with service_process(served_models_dir, tmp_path, MT_BODY_TIMEOUT_S="3", MT_MAX_CONNECTIONS="3") as (_, url):
        slow = _slow_upload(url)
        started = time.monotonic()
        answer = b""
        while chunk := slow.recv(65536):  # headers and body may come in separate packets; the server then closes
            answer += chunk
        answer = answer.decode("latin-1")
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "not received within 3 s" in answer and time.monotonic() - started < 20
        slow.close()
        # uvicorn counts the connection asking: with a cap of 3, two held connections fill it
        holders = [_holding_connection(url) for _ in range(2)]
        refused = httpx.get(f"{url}/health/live", timeout=10)
        assert refused.status_code == 503
        for holder in holders:
            holder.close()
        wait_until(lambda: httpx.get(f"{url}/health/live", timeout=10).status_code == 200, "the cap to free up")


def test_a_request_that_could_never_fit_the_queue_gets_400_not_429(served_models_dir):
    """429 means "retry later"; a request with more distinct sentences than the whole queue holds would be
    refused forever, so it gets 400 saying so."""
    texts = [f"Der Hund Nummer {i} rennt. Die Katze Nummer {i} schläft." for i in range(10)]  # 20 sentences
    with started_engine(served_models_dir, max_queue_sentences=16) as engine:
        app = create_app(engine.settings, engine)
        with serve_in_thread(app) as url:
            answer = httpx.post(f"{url}/v1/translate", json={"texts": texts, "source": "de", "target": "en"},
                                timeout=60)
    assert answer.status_code == 400 and "Retry-After" not in answer.headers
    assert answer.json()["error"] == "the texts hold 20 sentences; at most 16 fit in one request"
