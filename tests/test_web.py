"""The web page at / in a real headless browser (Playwright driving Debian's chromium) against a real server.

Every check compares what the page shows with what the API returns for the same request, so the tiny model's
garbage translations are as good as a real model's. Needs `apt-get install chromium` and `pip install playwright`
(its own browser download is not used); skipped, with the reason, when either is missing.

MT_WEB_MODELS_DIR=models runs it against real models instead of the tiny one; MT_UPDATE_DOCS_SCREENSHOT=1 also
copies the screenshot to docs/web-screenshot.png (off by default, so test runs leave the checkout unchanged).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import httpx
import pytest
from service_helpers import running_service


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("MT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
MAX_TEXT_CHARS = 300
SENTENCE = "Ein Mann fährt mit dem Fahrrad durch die Stadt."
TWO_SENTENCES = "Zwei Hunde spielen im Schnee. Eine Frau liest ein Buch."
TIMEOUT_MS = 30_000  # generous: the CPUs may be shared with training runs
if sync_playwright is not None:
    expect.set_options(timeout=TIMEOUT_MS)


# ---- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(request):
    """The service on a free loopback port: the tiny de-en/en-de models (or $MT_WEB_MODELS_DIR)."""
    models_dir = os.environ.get("MT_WEB_MODELS_DIR")
    models_dir = Path(models_dir) if models_dir else request.getfixturevalue("served_models_dir")
    with running_service(models_dir, max_text_chars=MAX_TEXT_CHARS) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("playwright is not installed: pip install playwright (uses the system chromium)")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MT_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageRecord:
    """A page plus everything it did that a test may want to check afterwards."""

    def __init__(self, page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(f"{m.text} ({m.location.get('url')})")
                if m.type == "error" else None)

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.base_url + "/")]


@pytest.fixture
def web(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    record = PageRecord(page, server)
    page.goto(server + "/")
    expect(page.get_by_test_id("translate-button")).to_be_enabled(timeout=TIMEOUT_MS)  # languages loaded
    try:
        yield record
    finally:
        context.close()


# ---- helpers ------------------------------------------------------------------------------------------------------

def choose_pair(page, source: str, target: str) -> None:
    # By label: also checks that the selectors are labelled.
    page.get_by_label("Source language").select_option(source)
    page.get_by_label("Target language").select_option(target)
    assert page.get_by_test_id("source-lang").input_value() == source
    assert page.get_by_test_id("target-lang").input_value() == target


def wait_for(page, status: str) -> None:
    expect(page.get_by_test_id("translation-output")).to_have_attribute("data-status", status, timeout=TIMEOUT_MS)


def translate_in_page(page, source: str, target: str, text: str, status: str = "done") -> None:
    """Pick the pair, type ``text``, press Translate and wait until the output has ``status``."""
    choose_pair(page, source, target)
    page.get_by_test_id("source-input").fill(text)
    page.get_by_test_id("translate-button").click()
    wait_for(page, status)


def api_translate(client: httpx.Client, text: str, source: str = "de", target: str = "en", n_best: int = 3) -> dict:
    """What the page asks for by default (model's beam size, 3 translations, scores, attention, word alignment)."""
    response = client.post("/v1/translate", json={"texts": [text], "source": source, "target": target,
                                                   "n_best": n_best, "return_scores": True, "return_attention": True,
                                                   "return_alignment": True})
    assert response.status_code == 200, response.text
    return response.json()["translations"][0]


def heatmap_tables(page) -> list[dict]:
    """Each sentence table of the heatmap as {sources, targets, weights, cells}, read from the DOM."""
    return page.get_by_test_id("attention-heatmap").locator("table").evaluate_all("""tables => tables.map(t => ({
        sources: [...t.tHead.rows[0].cells].slice(1).map(th => th.textContent),
        targets: [...t.tBodies[0].rows].map(r => r.cells[0].textContent),
        weights: [...t.tBodies[0].rows].map(r => [...r.querySelectorAll('td')].map(td => Number(td.dataset.weight))),
        cells: t.querySelectorAll('td[data-weight]').length,
    }))""")


def assert_heatmaps_match(tables: list[dict], attention: list[dict]) -> None:
    assert len(tables) == len(attention) >= 1
    for table, sentence in zip(tables, attention):
        sources, targets = sentence["source_tokens"], sentence["target_tokens"]
        assert table["sources"] == sources and table["targets"] == targets
        assert table["cells"] == len(sources) * len(targets) > 0
        assert table["weights"] == sentence["weights"]
        for row in table["weights"]:
            assert math.isclose(sum(row), 1.0, abs_tol=1e-2), row
            assert all(0.0 <= weight <= 1.0 for weight in row)


def alignment_grids(page) -> list[dict]:
    """Each sentence grid of the word alignment view as {sources, targets, links, pharaoh}, read from the DOM."""
    return page.get_by_test_id("word-alignment").locator("figure").evaluate_all("""figures => figures.map(f => {
        const t = f.querySelector('table');
        return {
            sources: [...t.tHead.rows[0].cells].slice(1).map(th => th.textContent),
            targets: [...t.tBodies[0].rows].map(r => r.cells[0].textContent),
            links: [...t.querySelectorAll('td[data-linked="true"]')].map(td => `${td.dataset.col}-${td.dataset.row}`),
            pharaoh: f.querySelector('[data-testid="alignment-pharaoh"]').textContent,
        };
    })""")


# ---- tests --------------------------------------------------------------------------------------------------------

@pytest.mark.browser
def test_translation_alternatives_and_attention_heatmap(web, client, tmp_path):
    page = web.page
    choose_pair(page, "de", "en")
    page.get_by_label("Text to translate").fill(SENTENCE)
    page.get_by_test_id("translate-button").click()
    wait_for(page, "done")

    expected = api_translate(client, SENTENCE)
    assert page.get_by_test_id("translation-output").text_content() == expected["text"]
    assert page.get_by_test_id("error-message").is_hidden()

    # n-best list: the best translation first, then the API's alternatives, each with its score.
    items = page.get_by_test_id("alternatives").locator("li")
    variants = [{"text": expected["text"], "score": expected["score"]}] + expected.get("alternatives", [])
    expect(items).to_have_count(len(variants))
    for item, variant in zip(items.all(), variants):
        assert item.locator("span").first.text_content() == variant["text"]
        assert f"{variant['score']:.3f}".replace("-", "\u2212") in item.text_content()

    # Heatmap: source tokens x target tokens cells, the API's weights, rows summing to 1.
    tables = heatmap_tables(page)
    assert_heatmaps_match(tables, expected["attention"])

    # Hover shows the exact weight (readout and tooltip); arrow keys move between cells.
    weights = tables[0]["weights"]
    row, col = max(((r, c) for r in range(len(weights)) for c in range(len(weights[0]))),
                   key=lambda rc: weights[rc[0]][rc[1]])
    cell = page.locator(f'[data-testid="attention-heatmap"] table >> nth=0 >> td[data-row="{row}"][data-col="{col}"]')
    cell.hover()
    readout = page.get_by_test_id("attention-readout")
    expect(readout).to_contain_text(f"{weights[row][col]:.4f}")
    assert f"{weights[row][col]:.4f}" in cell.get_attribute("title")
    first = page.locator('[data-testid="attention-heatmap"] table >> nth=0 >> td[data-row="0"][data-col="0"]')
    first.focus()
    page.keyboard.press("ArrowDown" if len(weights) > 1 else "ArrowRight")
    moved = (1, 0) if len(weights) > 1 else (0, 1)
    focused = page.evaluate("() => [document.activeElement.dataset.row, document.activeElement.dataset.col]")
    assert focused == [str(moved[0]), str(moved[1])]
    expect(readout).to_contain_text(f"{weights[moved[0]][moved[1]]:.4f}")

    # Shades follow the weights: the heaviest cell is darker than the lightest one.
    lightest = min(((r, c) for r in range(len(weights)) for c in range(len(weights[0]))),
                   key=lambda rc: weights[rc[0]][rc[1]])
    light = page.locator(f'[data-testid="attention-heatmap"] table >> nth=0 >> '
                         f'td[data-row="{lightest[0]}"][data-col="{lightest[1]}"]')
    if weights[row][col] - weights[lightest[0]][lightest[1]] > 0.05:
        assert _luminance(cell) < _luminance(light)

    screenshot = tmp_path / "web.png"
    page.mouse.move(0, 0)
    page.evaluate("() => document.activeElement.blur()")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("MT_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, REPO / "docs" / "web-screenshot.png")

    assert web.foreign_requests() == []
    assert web.errors == []


@pytest.mark.browser
def test_ctrl_enter_translates_each_sentence_with_its_own_heatmap(web, client):
    page = web.page
    choose_pair(page, "de", "en")
    page.get_by_test_id("source-input").fill(TWO_SENTENCES)
    page.get_by_test_id("source-input").press("Control+Enter")
    wait_for(page, "done")

    expected = api_translate(client, TWO_SENTENCES)
    assert len(expected["attention"]) == 2
    assert page.get_by_test_id("translation-output").text_content() == expected["text"]
    assert_heatmaps_match(heatmap_tables(page), expected["attention"])
    assert web.errors == []


@pytest.mark.browser
def test_word_alignment_view_shows_the_apis_links(web, client):
    page = web.page
    translate_in_page(page, "de", "en", TWO_SENTENCES)
    expected = api_translate(client, TWO_SENTENCES)
    heatmap = page.get_by_test_id("attention-heatmap")
    words = page.get_by_test_id("word-alignment")
    expect(heatmap).to_be_visible()
    expect(words).to_be_hidden()  # piece attention is the default view

    page.get_by_label("Word alignment").check()
    expect(words).to_be_visible()
    expect(heatmap).to_be_hidden()
    grids = alignment_grids(page)
    assert len(grids) == len(expected["alignment"]) == 2
    for grid, sentence in zip(grids, expected["alignment"]):
        assert grid["sources"] == sentence["source_words"] and grid["targets"] == sentence["target_words"]
        assert sorted(grid["links"]) == sorted(sentence["alignment"].split())
        assert len(grid["links"]) == len(sentence["target_words"])  # one link per target word
        assert grid["pharaoh"] == sentence["alignment"]

    # The choice holds for the next translation; switching back shows the heatmap again.
    translate_in_page(page, "de", "en", SENTENCE)
    expect(words).to_be_visible()
    assert [g["pharaoh"] for g in alignment_grids(page)] == [
        s["alignment"] for s in api_translate(client, SENTENCE)["alignment"]]
    page.get_by_label("Piece attention").check()
    expect(heatmap).to_be_visible()
    expect(words).to_be_hidden()
    assert web.errors == [] and web.foreign_requests() == []


@pytest.mark.browser
def test_api_and_network_errors_are_shown(web, client):
    page = web.page
    choose_pair(page, "de", "en")
    box = page.get_by_test_id("source-input")
    error = page.get_by_test_id("error-message")
    button = page.get_by_test_id("translate-button")
    assert error.get_attribute("role") == "alert"

    # A real 400 from the service: the text is longer than the limit it was started with.
    box.fill("Ein Hund rennt. " * (MAX_TEXT_CHARS // 16 + 1))
    button.click()
    wait_for(page, "error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("HTTP 400")
    expect(error).to_contain_text(f"at most {MAX_TEXT_CHARS}")
    assert page.get_by_test_id("attention-heatmap").locator("td").count() == 0

    # Empty text is refused before any request is made.
    requests_before = len(web.requests)
    box.fill("   ")
    button.click()
    expect(error).to_contain_text("Enter some text")
    assert len(web.requests) == requests_before

    # An overloaded service (429 with Retry-After).
    page.route("**/v1/translate", lambda route: route.fulfill(
        status=429, headers={"Retry-After": "3"}, json={"error": "the translation queue is full"}))
    box.fill(SENTENCE)
    button.click()
    expect(error).to_contain_text("HTTP 429")
    expect(error).to_contain_text("Try again in 3 s")
    page.unroute("**/v1/translate")

    # The service cannot be reached at all.
    page.route("**/v1/translate", lambda route: route.abort("connectionrefused"))
    button.click()
    expect(error).to_contain_text("Could not reach the service")
    wait_for(page, "error")
    page.unroute("**/v1/translate")

    # A successful translation clears the error.
    button.click()
    wait_for(page, "done")
    expect(error).to_be_hidden()
    assert page.get_by_test_id("translation-output").text_content() == api_translate(client, SENTENCE)["text"]
    assert web.foreign_requests() == []


@pytest.mark.browser
def test_api_key_field_unlocks_a_service_that_requires_keys(browser, served_models_dir):
    with running_service(served_models_dir, api_keys=["web-test-key-0123456789"]) as url:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(url + "/")
            expect(page.get_by_test_id("translate-button")).to_be_enabled()  # /languages needs no key
            translate_in_page(page, "de", "en", SENTENCE, status="error")
            expect(page.get_by_test_id("error-message")).to_contain_text("HTTP 401")

            page.get_by_label("API key").fill("wrong-key")
            page.get_by_test_id("translate-button").click()
            expect(page.get_by_test_id("error-message")).to_contain_text("HTTP 403")

            page.get_by_label("API key").fill("web-test-key-0123456789")
            page.get_by_test_id("translate-button").click()
            wait_for(page, "done")
            expected = httpx.post(url + "/v1/translate", headers={"Authorization": "Bearer web-test-key-0123456789"},
                                  json={"texts": [SENTENCE], "source": "de", "target": "en"}, timeout=60)
            assert page.get_by_test_id("translation-output").inner_text().strip() == \
                expected.json()["translations"][0]["text"]
        finally:
            context.close()


@pytest.mark.browser
def test_swap_reverses_the_pair_and_moves_the_translation_into_the_input(web, client):
    page = web.page
    translate_in_page(page, "de", "en", SENTENCE)
    translation = page.get_by_test_id("translation-output").text_content()
    page.get_by_role("button", name="Swap languages").click()
    assert page.get_by_test_id("source-lang").input_value() == "en"
    assert page.get_by_test_id("target-lang").input_value() == "de"
    assert page.get_by_test_id("source-input").input_value() == translation


@pytest.mark.browser
def test_detect_language_reports_the_detected_source(web, client):
    page = web.page
    translate_in_page(page, "auto", "en", SENTENCE)
    expected = api_translate(client, SENTENCE, source="auto")
    assert page.get_by_test_id("translation-output").text_content() == expected["text"]
    name = {"de": "German", "en": "English"}[expected["detected_language"]["language"]]
    expect(page.locator("#translation-meta")).to_contain_text(f"detected {name}")


@pytest.mark.browser
def test_languages_are_retried_while_the_models_load(browser, server):
    """/languages answers 503 while the models load (see test_api); the page says so and tries again."""
    context = browser.new_context()
    page = context.new_page()
    calls = []

    def loading_then_ready(route):
        calls.append(route.request.url)
        if len(calls) == 1:
            route.fulfill(status=503, json={"error": "models are still loading"})
        else:
            route.continue_()

    try:
        page.route("**/languages", loading_then_ready)
        page.goto(server + "/")
        expect(page.get_by_test_id("translate-button")).to_be_enabled(timeout=TIMEOUT_MS)
        assert len(calls) == 2
        options = page.get_by_test_id("source-lang").locator("option").evaluate_all("os => os.map(o => o.value)")
        assert options[0] == "de" and "auto" in options
    finally:
        context.close()


def test_page_and_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for testid in ("source-input", "source-lang", "target-lang", "translate-button", "translation-output",
                   "attention-heatmap", "word-alignment", "show-word-alignment"):
        assert f'data-testid="{testid}"' in page.text
    assert client.get("/web/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/web/style.css").headers["content-type"].startswith("text/css")
    for missing in ("/web/index.html", "/web/nothing.js", "/web/..%2Fapi%2Fapp.py"):
        assert client.get(missing).status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]


def _luminance(cell) -> float:
    rgb = cell.evaluate("td => getComputedStyle(td).backgroundColor")
    r, g, b = (int(part) for part in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.browser
def test_page_says_what_the_selected_model_was_trained_on(web, client):
    page = web.page
    choose_pair(page, "de", "en")
    card = next(c for c in client.get("/v1/models").json()["models"] if c["id"] == "de-en")
    [corpus] = [c for c in card["training"]["corpora"] if c["train_pairs"]]
    line = page.get_by_test_id("model-domain")
    expect(line).to_be_visible()
    expect(line).to_contain_text(f"{corpus['domain']} ({corpus['name']}, {corpus['train_pairs']:,} pairs)")
    assert corpus["domain"] == "image captions"
