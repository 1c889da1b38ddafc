"""API keys (401/403), per-key rate limits (429), CORS, the metrics port, and what the logs never contain."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import httpx
import pytest
from conftest import REPO
from service_helpers import metric_value, running_service, serve_in_thread, settings_for, started_engine

from service import auth
from service.api import create_app
from service.auth import ApiKeyConfigError, ApiKeys, KeyRing, TokenBucket
from service.config import Settings
from service.errors import Forbidden, RateLimited, Unauthorized
from service.logs import JsonFormatter

ALPHA, BETA, GAMMA = "alpha-key-0123456789", "beta-key-0123456789", "gamma-key-0123456789"
LIBRE = {"q": "Ein Hund rennt.", "source": "de", "target": "en"}
NATIVE = {"texts": ["Ein Hund rennt."], "source": "de", "target": "en"}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    path.write_text(f"# key            requests per minute\n{BETA}   0   # unlimited\n\n{GAMMA}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def keyed(served_models_dir, keys_file):
    """A server requiring keys: ALPHA (env) and GAMMA (file) at 1 request/minute after a burst of 3,
    BETA (file) unlimited. Failed authentications are not limited here (their own test below)."""
    with running_service(served_models_dir, api_keys=[ALPHA], api_keys_file=keys_file, rate_limit_per_minute=1,
                         rate_limit_burst=3, max_wait_ms=0, auth_failures_per_minute=0) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and words in response.json()["error"]


# ---- API keys -----------------------------------------------------------------------------------------------------

def test_keys_from_the_environment_accept_commas_whitespace_or_json(monkeypatch):
    monkeypatch.setenv("MT_API_KEYS", f" {ALPHA}, {BETA}\n{GAMMA} ")
    assert Settings().api_keys == [ALPHA, BETA, GAMMA]
    monkeypatch.setenv("MT_API_KEYS", json.dumps([ALPHA, BETA]))
    assert Settings().api_keys == [ALPHA, BETA]
    monkeypatch.setenv("MT_API_KEYS", "")
    assert Settings().api_keys == [] and KeyRing.from_settings(Settings()) is None  # no keys: an open API


@pytest.mark.parametrize("path", ["/translate", "/detect"])
def test_libretranslate_routes_need_a_valid_key_in_the_header_or_the_body(keyed, path):
    body = LIBRE if path == "/translate" else {"q": LIBRE["q"]}
    missing = keyed.post(path, json=body)
    assert_error(missing, 401, "API key is required")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert_error(keyed.post(path, json={**body, "api_key": ""}), 401, "API key is required")  # LibreTranslate's default
    assert_error(keyed.post(path, json={**body, "api_key": "wrong"}), 403, "invalid API key")
    assert_error(keyed.post(path, json=body, headers=bearer(ALPHA[:-1])), 403, "invalid API key")
    assert_error(keyed.post(path, json=body, headers={"Authorization": f"Basic {BETA}"}), 401, "Bearer")
    assert keyed.post(path, json=body, headers=bearer(BETA)).status_code == 200
    assert keyed.post(path, json={**body, "api_key": BETA}).status_code == 200
    assert keyed.post(path, data={**body, "api_key": BETA}).status_code == 200
    assert keyed.post(path, files={k: (None, v) for k, v in {**body, "api_key": BETA}.items()}).status_code == 200
    # the header wins over the body
    assert_error(keyed.post(path, json={**body, "api_key": BETA}, headers=bearer("wrong")), 403, "invalid")


def test_native_route_needs_a_valid_bearer_key(keyed):
    assert_error(keyed.post("/v1/translate", json=NATIVE), 401, "API key is required")
    assert_error(keyed.post("/v1/translate", json=NATIVE, headers=bearer("wrong")), 403, "invalid API key")
    assert keyed.post("/v1/translate", json=NATIVE, headers=bearer(BETA)).status_code == 200


def test_the_key_is_checked_before_the_request_is_validated(keyed):
    """A client without a key learns nothing about the fields: 401 for a body that would be a 400."""
    assert_error(keyed.post("/translate", json={"q": 5}), 401, "API key")
    assert_error(keyed.post("/v1/translate", json={"texts": 5}), 401, "API key")
    assert_error(keyed.post("/v1/translate", content=b"texts", headers={"content-type": "text/plain"}), 401, "key")


def test_odd_keys_are_refused_not_crashed_on(keyed):
    surrogate = keyed.post("/translate", content=json.dumps({**LIBRE, "api_key": "\ud800"}).encode(),
                           headers={"content-type": "application/json"})
    assert_error(surrogate, 403, "invalid API key")
    assert_error(keyed.post("/translate", json={**LIBRE, "api_key": ["a", "b"]}), 401, "API key")  # not a string
    assert_error(keyed.post("/translate", json=LIBRE, headers={"Authorization": ("Bearer " + "ü" * 3000).encode()}),
                 403, "invalid")


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics", "/", "/web/app.js", "/languages",
                                  "/v1/models", "/openapi.json", "/docs"])
def test_operations_discovery_and_the_web_page_need_no_key(keyed, path):
    assert keyed.get(path).status_code == 200


def test_every_key_is_compared_in_constant_time(monkeypatch):
    """hmac.compare_digest over the SHA-256 digests of *all* keys, whichever matches (or none)."""
    ring = KeyRing.from_settings(Settings(api_keys=[ALPHA, BETA, GAMMA]))
    calls = []

    def counting(a, b):
        calls.append((len(a), len(b)))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented in (ALPHA, GAMMA, "wrong", "x" * 10_000):
        calls.clear()
        try:
            ring.authenticate(presented)
        except Forbidden:
            pass
        assert calls == [(32, 32)] * 3  # fixed-length digests: not even the key's length shows
    with pytest.raises(Unauthorized):
        ring.authenticate(None)


def test_bad_key_configuration_fails_clearly_without_printing_the_keys(tmp_path, served_models_dir):
    def ring(**overrides):
        return KeyRing.from_settings(settings_for(served_models_dir, **overrides))

    with pytest.raises(ApiKeyConfigError, match="cannot read"):
        ring(api_keys_file=tmp_path / "nowhere.txt")
    (tmp_path / "empty.txt").write_text("# no keys yet\n")
    with pytest.raises(ApiKeyConfigError, match="holds no key"):  # fails closed: never an open API by accident
        ring(api_keys_file=tmp_path / "empty.txt")
    (tmp_path / "bad-rate.txt").write_text(f"{ALPHA} fast\n")
    with pytest.raises(ApiKeyConfigError, match="line 1"):
        ring(api_keys_file=tmp_path / "bad-rate.txt")
    with pytest.raises(ApiKeyConfigError, match="number 2") as error:
        ring(api_keys=[ALPHA, "schlüssel"])
    assert "schlüssel" not in str(error.value)
    env = {"MT_MODELS_DIR": str(served_models_dir), "MT_API_KEYS_FILE": str(tmp_path / "bad-rate.txt"),
           "PATH": "/usr/bin:/bin"}
    served = subprocess.run([sys.executable, "-m", "service", "serve", "--port", "0"], capture_output=True,
                            text=True, cwd=REPO, timeout=120, env=env)
    assert served.returncode == 2
    assert "line 1" in served.stderr and ALPHA not in served.stderr


def test_an_edited_keys_file_is_picked_up_without_a_restart(tmp_path, caplog):
    """Keys added and revoked in MT_API_KEYS_FILE count after the next check; a broken or deleted file keeps
    the previous keys; a kept key keeps its rate-limit bucket across reloads."""
    now = [0.0]
    path = tmp_path / "keys.txt"
    path.write_text(f"{ALPHA} 30\n{BETA}\n")
    keys = ApiKeys.from_settings(Settings(api_keys=[], api_keys_file=path, rate_limit_burst=1),
                                 check_every_s=1.0, clock=lambda: now[0])
    alpha = keys.current().authenticate(ALPHA)
    keys.current().admit(alpha)  # ALPHA's only token
    path.write_text(f"{ALPHA} 30\n{GAMMA}\n")  # BETA revoked, GAMMA added
    assert keys.current().authenticate(BETA)  # not checked again before a second has passed
    now[0] = 1.0
    with pytest.raises(Forbidden):
        keys.current().authenticate(BETA)
    assert keys.current().authenticate(GAMMA).id.startswith("key-")
    with pytest.raises(RateLimited):  # the reload did not refill ALPHA's bucket
        keys.current().admit(keys.current().authenticate(ALPHA))

    with caplog.at_level(logging.ERROR, logger="service.auth"):
        path.write_text(f"{BETA} fast\n")
        now[0] = 2.0
        assert keys.current().authenticate(GAMMA)  # still the previous keys
        path.unlink()
        now[0] = 3.0
        assert keys.current().authenticate(GAMMA)
    assert "line 1" in caplog.text and "keeping the previous 2" in caplog.text and BETA not in caplog.text
    path.write_text(f"{BETA}\n")
    now[0] = 4.0
    assert keys.current().authenticate(BETA) and len(keys.current().keys) == 1


def test_environment_keys_are_never_reloaded():
    keys = ApiKeys.from_settings(Settings(api_keys=[ALPHA], api_keys_file=None), clock=lambda: 1e9)
    assert keys.current() is keys.current() and keys.current().authenticate(ALPHA)
    assert ApiKeys.from_settings(Settings(api_keys=[], api_keys_file=None)) is None


# ---- rate limits --------------------------------------------------------------------------------------------------

def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(capacity=2, per_second=0.5, now=0.0)
    assert bucket.take(0.0) == 0 and bucket.take(0.0) == 0
    assert bucket.take(0.0) == pytest.approx(2.0)  # one token every 2 s
    assert bucket.take(1.0) == pytest.approx(1.0)
    assert bucket.take(2.0) == 0
    assert bucket.take(100.0) == 0 and bucket.take(100.0) == 0 and bucket.take(100.0) > 0  # never above capacity


def test_rate_limit_with_a_fake_clock():
    now = [0.0]
    ring = KeyRing.from_settings(Settings(api_keys=[ALPHA], rate_limit_per_minute=30, rate_limit_burst=1))
    ring = KeyRing(ring.keys, burst=1, clock=lambda: now[0])
    key = ring.authenticate(ALPHA)
    ring.admit(key)
    with pytest.raises(RateLimited) as limited:
        ring.admit(key)
    assert limited.value.retry_after_s == 2  # 30 per minute: a token every 2 s
    now[0] = 2.0
    ring.admit(key)


def test_each_key_has_its_own_rate_limit(keyed):
    """ALPHA: a burst of 3, then 429 with Retry-After, on every route; GAMMA is not affected; BETA has no limit."""
    statuses = [keyed.post("/translate", json=LIBRE, headers=bearer(ALPHA)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    for limited in (keyed.post("/translate", json=LIBRE, headers=bearer(ALPHA)),
                    keyed.post("/v1/translate", json=NATIVE, headers=bearer(ALPHA)),
                    keyed.post("/detect", json={"q": "Hallo", "api_key": ALPHA})):
        assert_error(limited, 429, "rate limit")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60  # 1 request per minute
    assert keyed.post("/translate", json=LIBRE, headers=bearer(GAMMA)).status_code == 200
    assert all(keyed.post("/v1/translate", json=NATIVE, headers=bearer(BETA)).status_code == 200 for _ in range(8))
    metrics = keyed.get("/metrics").text
    assert metric_value(metrics, "mt_rejections_total", {"reason": "rate_limited"}) == 3


def test_a_work_bucket_lets_a_request_overdraw_and_the_debt_delays_the_next():
    bucket = TokenBucket(100, 100 / 60, now=0.0)
    assert bucket.spend(150, 0.0) == 0  # more than is left: let through, 50 in debt
    assert bucket.spend(1, 0.0) == pytest.approx(30.0, abs=0.01)  # the debt repays at 100 per minute
    assert bucket.spend(1, 29.0) > 0
    assert bucket.spend(1, 31.0) == 0


def test_work_rate_limits_count_what_is_decoded(served_models_dir):
    """MT_RATE_LIMIT_WORK_PER_MINUTE: each key's budget of source tokens x beam size. A request with work left
    goes through, a key in debt gets 429 with Retry-After, a cached sentence costs nothing, other keys go on."""
    with running_service(served_models_dir, api_keys=[ALPHA, BETA], rate_limit_work_per_minute=60,
                         auth_failures_per_minute=0, cache_size=1000) as url, httpx.Client(base_url=url, timeout=60) as client:
        big = {"texts": ["Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt ein Fenster."] * 2,
               "source": "de", "target": "en", "beam_size": 5}
        assert client.post("/v1/translate", json=big, headers=bearer(ALPHA)).status_code == 200  # ~100 of 60
        other = {**big, "texts": ["Zwei Hunde spielen im Schnee."]}
        limited = client.post("/v1/translate", json=other, headers=bearer(ALPHA))
        assert_error(limited, 429, "work rate limit of 60 per minute")
        assert 1 <= int(limited.headers["Retry-After"]) <= 120
        assert client.post("/v1/translate", json=big, headers=bearer(ALPHA)).status_code == 200  # cached: free
        assert client.post("/v1/translate", json=other, headers=bearer(BETA)).status_code == 200


# ---- CORS ---------------------------------------------------------------------------------------------------------

def test_cors_is_off_by_default_and_allows_only_the_configured_origins(served_models_dir):
    origin = "https://app.example"
    with started_engine(served_models_dir) as engine:
        with serve_in_thread(create_app(engine.settings, engine)) as url:
            plain = httpx.post(f"{url}/translate", json=LIBRE, headers={"Origin": origin})
            assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
        engine.settings = settings_for(served_models_dir, cors_origins=[origin], api_keys=[ALPHA])
        with serve_in_thread(create_app(engine.settings, engine)) as url:
            preflight = httpx.options(f"{url}/v1/translate", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            assert preflight.status_code == 200  # no key needed for a preflight
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
            answer = httpx.post(f"{url}/v1/translate", json=NATIVE, headers={"Origin": origin, **bearer(ALPHA)})
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
            assert "retry-after" in answer.headers["access-control-expose-headers"].lower()
            stranger = httpx.options(f"{url}/v1/translate", headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
            assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
            # the request middleware's own answers (here its 413) are inside CORS, so a page can read them
            too_big = httpx.post(f"{url}/v1/translate", content=b"x" * (engine.settings.max_body_bytes + 1),
                                 headers={"Origin": origin, "Content-Type": "application/json", **bearer(ALPHA)})
            assert too_big.status_code == 413 and too_big.headers["access-control-allow-origin"] == origin


# ---- metrics on their own port -----------------------------------------------------------------------------------

def test_metrics_can_move_to_their_own_port(served_models_dir):
    with started_engine(served_models_dir, metrics_port=0) as engine:
        app = create_app(engine.settings, engine)
        with serve_in_thread(app) as url:
            assert httpx.post(f"{url}/translate", json=LIBRE).status_code == 200
            assert httpx.get(f"{url}/metrics").status_code == 404
            assert "/metrics" not in httpx.get(f"{url}/openapi.json").json()["paths"]
            metrics_url = f"http://127.0.0.1:{app.state.metrics_port}/metrics"
            scraped = httpx.get(metrics_url)
            assert scraped.status_code == 200
            labels = {"endpoint": "/translate", "status": "200"}
            assert metric_value(scraped.text, "mt_http_requests_total", labels) == 1
        with pytest.raises(httpx.ConnectError):  # closed with the server
            httpx.get(metrics_url)


# ---- logs ---------------------------------------------------------------------------------------------------------

SECRET = "Geheimwort"


def exercise(url: str, key: str | None = None) -> None:
    """Requests of every kind carrying SECRET in their text: successes, 4xx of each sort, HTML, detection."""
    headers = bearer(key) if key else {}
    text = f"Ein Hund namens {SECRET} rennt."
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        assert client.post("/translate", json={"q": text, "source": "de", "target": "en"}).status_code == 200
        assert client.post("/translate", data={"q": text, "source": "de", "target": "en"}).status_code == 200
        client.post("/translate", json={"q": f"<p title='{SECRET}'>{text}</p>", "source": "de", "target": "en",
                                        "format": "html"})
        client.post("/v1/translate", json={"texts": [text], "target": "en", "return_attention": True,
                                           "n_best": 2, "beam_size": 2})
        client.post("/detect", json={"q": text})
        client.post("/translate", json={"q": text, "source": "de", "target": "xx"})  # 400
        client.post("/translate", json={"q": [text] * 10, "source": "de", "target": "en"})  # 400: too many
        client.post("/translate", content=f'{{"q": "{text}", '.encode(), headers={"content-type": "application/json"})
        client.post("/v1/translate", json={"texts": [text], "target": "en", SECRET: 1})  # 400: unknown field
        client.post("/v1/translate", json={"texts": [text * 400], "target": "en"})  # 413


def captured(caplog) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_request_text_and_keys_never_reach_the_logs_by_default(served_models_dir, caplog):
    caplog.set_level(logging.DEBUG)
    with running_service(served_models_dir, api_keys=[ALPHA], log_level="DEBUG") as url:
        exercise(url, ALPHA)
    logs = captured(caplog)
    assert logs.count('"msg": "request"') >= 10  # the access log saw every request...
    assert '"api_key": "key-' in logs  # ...and names the key by its fingerprint only
    assert SECRET not in logs and ALPHA not in logs


def test_log_text_puts_the_text_in_the_logs(served_models_dir, caplog):
    """The same capture sees the text once MT_LOG_TEXT is on, so the test above can fail."""
    caplog.set_level(logging.DEBUG)
    with running_service(served_models_dir, log_text=True) as url:
        exercise(url)
    assert SECRET in captured(caplog)


def test_client_controlled_log_fields_are_capped(served_models_dir, caplog):
    """A 100,000-character language code or path reaches the access log cut to MAX_LOGGED_CHARS, and an
    oversized or odd X-Request-ID is replaced, not logged."""
    from service.api.middleware import MAX_LOGGED_CHARS

    caplog.set_level(logging.DEBUG)
    huge = "q" * 100_000
    with running_service(served_models_dir) as url:
        for body in ({"q": "Hallo", "source": huge, "target": "en"}, {"q": "Hallo", "source": "de", "target": huge}):
            assert httpx.post(f"{url}/translate", json=body, timeout=60).status_code == 400
        assert httpx.post(f"{url}/v1/translate", json={"texts": ["Hallo"], "source": huge, "target": "en"},
                          timeout=60).status_code in (400, 422)
        assert httpx.get(f"{url}/{huge[:8000]}", timeout=60).status_code == 404
        answer = httpx.get(f"{url}/health/live", headers={"X-Request-ID": "id;" + "r" * 200})
        assert len(answer.headers["x-request-id"]) == 32  # replaced by a fresh id
    lines = [formatted for formatted in captured(caplog).splitlines() if '"msg": "request"' in formatted]
    assert lines and all(len(line) < 3 * MAX_LOGGED_CHARS for line in lines), max(map(len, lines))


# ---- key strength, guessing, fingerprints -------------------------------------------------------------------------

@pytest.mark.parametrize("weak, problem", [("short-key-1", "shorter than 16"), ("aaaaaaaaaaaaaaaaaaaa", "guessable"),
                                           ("abababababababababab", "guessable"), ("0000111122223333", "guessable")])
def test_weak_keys_are_refused_at_start_up_without_quoting_them(weak, problem):
    with pytest.raises(ApiKeyConfigError, match=problem) as raised:
        KeyRing.from_settings(Settings(api_keys=[ALPHA, weak]))
    assert weak not in str(raised.value) and "number 2" in str(raised.value)


def test_repeated_failed_keys_from_one_address_are_slowed_down(served_models_dir):
    with running_service(served_models_dir, api_keys=[ALPHA], auth_failures_per_minute=6) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            statuses = [client.post("/v1/translate", json=NATIVE, headers=bearer(f"guess-{i:020d}")).status_code
                        for i in range(12)]
            assert statuses[:10] == [403] * 10  # a burst of 10 failures...
            refused = client.post("/v1/translate", json=NATIVE, headers=bearer(ALPHA))
            assert statuses[10:] == [429, 429] and refused.status_code == 429  # ...then even a good key waits
            assert 1 <= int(refused.headers["Retry-After"]) <= 10


def test_key_fingerprints_are_keyed_hashes():
    import hashlib

    plain = "key-" + hashlib.sha256(ALPHA.encode()).hexdigest()[:8]
    first = KeyRing.from_settings(Settings(api_keys=[ALPHA], key_fingerprint_secret="s1")).keys[0].id
    again = KeyRing.from_settings(Settings(api_keys=[ALPHA], key_fingerprint_secret="s1")).keys[0].id
    other = KeyRing.from_settings(Settings(api_keys=[ALPHA], key_fingerprint_secret="s2")).keys[0].id
    assert first == again != other and plain not in (first, other)
