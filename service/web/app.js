// The translation page: fills the language selectors from GET /languages, calls POST /v1/translate with
// n-best, scores, attention and word alignments, and draws per sentence an attention heatmap over pieces or
// a grid of word alignment links (a toggle picks which). Plain JS, no dependencies.
// URLs are relative to the page, so the page also works behind a reverse proxy that adds a path prefix.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("translate-form");
  const sourceSelect = $("source-lang");
  const targetSelect = $("target-lang");
  const swapButton = $("swap");
  const beamSelect = $("beam-size");
  const nBestSelect = $("n-best");
  const input = $("source-input");
  const charCount = $("char-count");
  const button = $("translate-button");
  const status = $("status");
  const errorBox = $("error");
  const output = $("translation-output");
  const meta = $("translation-meta");
  const alternativesBlock = $("alternatives-block");
  const alternativesList = $("alternatives");
  const attentionBlock = $("attention-block");
  const heatmap = $("attention-heatmap");
  const pieceView = $("piece-view");
  const wordView = $("word-view");
  const wordAlignment = $("word-alignment");
  const viewChoices = document.querySelectorAll('input[name="attention-view"]');
  const readout = $("cell-readout");
  const modelDomain = $("model-domain");

  const AUTO = "auto";
  const LOW = [255, 255, 255];  // colour of weight 0
  const HIGH = [8, 48, 107];    // colour of weight 1 (the legend's gradient uses the same two)
  let languages = [];           // [{code, name, targets}] from /languages
  let cards = {};               // "src-tgt" -> model card from /v1/models (what each model was trained on)
  let pending = null;           // AbortController of the request in flight

  // ---- languages ------------------------------------------------------------------------------------------------

  async function loadLanguages(attempt = 0) {
    let problem;
    try {
      const response = await fetch("languages", {headers: {Accept: "application/json"}});
      if (response.ok) {
        languages = await response.json();
        fillSources();
        loadModelCards();
        return;
      }
      problem = await describeHttpError(response);
    } catch (error) {
      problem = `Could not reach the service: ${error.message}`;
    }
    // 503 while the models load, or the service restarting: keep trying, a little slower each time.
    setStatus(`${problem} Retrying…`);
    setTimeout(() => loadLanguages(attempt + 1), Math.min(1000 * (attempt + 1), 5000));
  }

  // ---- what the selected model was trained on -----------------------------------------------------------------

  async function loadModelCards() {
    try {
      const response = await fetch("v1/models", {headers: {Accept: "application/json"}});
      if (!response.ok) return;  // the line is a courtesy: the page works without it
      for (const card of (await response.json()).models) cards[`${card.source_language}-${card.target_language}`] = card;
      showModelDomain();
    } catch (error) { /* keep the page usable */ }
  }

  function describeTraining(card) {
    const training = card.training || {};
    const corpora = (training.corpora || []).filter((corpus) => corpus.train_pairs > 0);
    if (corpora.length === 0) return training.data ? `Trained on ${training.data}.` : "";
    const parts = corpora.map((corpus) =>
      `${corpus.domain || "unspecified text"} (${corpus.name}, ${corpus.train_pairs.toLocaleString("en")} pairs)`);
    return `This model was trained on ${parts.join(" and ")}. Expect weaker translations of other kinds of text.`;
  }

  function showModelDomain() {
    const card = cards[`${sourceSelect.value}-${targetSelect.value}`];
    modelDomain.textContent = card ? describeTraining(card) : "";
    modelDomain.hidden = !modelDomain.textContent;
  }

  function nameOf(code) {
    const entry = languages.find((language) => language.code === code);
    return entry ? entry.name : code;
  }

  function fillSources() {
    const sources = languages.filter((language) => language.targets.length > 0);
    if (sources.length === 0) {
      showError("The service serves no translation models.");
      setStatus("");
      return;
    }
    sourceSelect.replaceChildren(
      ...sources.map((language) => new Option(`${language.name} (${language.code})`, language.code)),
      new Option("Detect language", AUTO));
    sourceSelect.value = sources[0].code;
    fillTargets();
    for (const control of [sourceSelect, targetSelect, button]) control.disabled = false;
    setStatus("");
  }

  function targetsOf(source) {
    if (source !== AUTO) return languages.find((language) => language.code === source)?.targets ?? [];
    return [...new Set(languages.flatMap((language) => language.targets))].sort();
  }

  function fillTargets() {
    const previous = targetSelect.value;
    const targets = targetsOf(sourceSelect.value);
    targetSelect.replaceChildren(...targets.map((code) => new Option(`${nameOf(code)} (${code})`, code)));
    if (targets.includes(previous)) targetSelect.value = previous;
    updateSwap();
    showModelDomain();
  }

  function updateSwap() {
    const source = sourceSelect.value;
    swapButton.disabled = source === AUTO || !targetsOf(targetSelect.value).includes(source);
  }

  function swap() {
    const [source, target] = [sourceSelect.value, targetSelect.value];
    sourceSelect.value = target;
    fillTargets();
    targetSelect.value = source;
    updateSwap();
    showModelDomain();
    if (output.dataset.status === "done" && output.textContent) input.value = output.textContent;
    updateCharCount();
  }

  // ---- translating --------------------------------------------------------------------------------------------

  async function translate() {
    const text = input.value;
    clearError();
    if (!text.trim()) {
      showResultState("error");
      showError("Enter some text to translate.");
      input.focus();
      return;
    }
    const beamSize = beamSelect.value ? Number(beamSelect.value) : null;
    let nBest = Number(nBestSelect.value);
    if (beamSize !== null) nBest = Math.min(nBest, beamSize);  // the API refuses n_best > beam_size
    const body = {
      texts: [text], source: sourceSelect.value, target: targetSelect.value,
      beam_size: beamSize, n_best: nBest, return_scores: true, return_attention: true, return_alignment: true,
    };

    if (pending) pending.abort();  // a newer request replaces the one in flight
    const controller = new AbortController();
    pending = controller;
    showResultState("busy");
    setStatus("Translating…");
    try {
      await request(controller, body);
    } catch (error) {
      if (error.name !== "AbortError") fail(`Could not show the answer: ${error.message}`);
    } finally {
      if (pending === controller) pending = null;
    }
  }

  async function request(controller, body) {
    let response;
    try {
      response = await fetch("v1/translate", {
        method: "POST", signal: controller.signal,
        headers: authorized({"Content-Type": "application/json", Accept: "application/json"}),
        body: JSON.stringify(body),
      });
    } catch (error) {  // no answer at all: network down, service stopped, or aborted by a newer request
      if (error.name !== "AbortError") fail(`Could not reach the service: ${error.message}`);
      return;
    }
    const answer = response.ok ? await response.json() : await describeHttpError(response);
    if (pending !== controller) return;  // superseded meanwhile
    if (!response.ok) {
      fail(answer);
      return;
    }
    render(answer.translations[0], answer.timing, body.target);
    setStatus("");
  }

  function fail(message) {
    showResultState("error");
    setStatus("");
    showError(message);
  }

  // The key goes in an Authorization header (never in the URL or the page's storage).
  function authorized(headers) {
    const key = document.getElementById("api-key").value.trim();
    return key ? {...headers, Authorization: `Bearer ${key}`} : headers;
  }

  async function describeHttpError(response) {
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch (_) { /* not JSON (e.g. a proxy's HTML page): keep the status text */ }
    const code = response.status;
    switch (code) {
      case 400: return `The request was rejected (HTTP 400): ${message}`;
      case 401: return `An API key is required (HTTP 401): ${message}. Enter it in the API key field.`;
      case 403: return `The API key was refused (HTTP 403): ${message}`;
      case 413: return `The text is too large (HTTP 413): ${message}`;
      case 429: {
        const wait = response.headers.get("Retry-After");
        const advice = wait ? `Try again in ${wait} s.` : "Try again shortly.";
        return `The service is busy (HTTP 429): ${message}. ${advice}`;
      }
      case 503: return `The service is not ready (HTTP 503): ${message}.`;
      case 504: return `The translation took too long (HTTP 504): ${message}`;
      default: return `The service answered HTTP ${code}: ${message}`;
    }
  }

  // ---- rendering ------------------------------------------------------------------------------------------------

  function showResultState(state) {
    output.dataset.status = state;
    output.setAttribute("aria-busy", state === "busy" ? "true" : "false");
    if (state !== "done") {
      output.textContent = "";
      meta.textContent = "";
      alternativesList.replaceChildren();
      heatmap.replaceChildren();
      wordAlignment.replaceChildren();
      alternativesBlock.hidden = true;
      attentionBlock.hidden = true;
      readout.innerHTML = "&nbsp;";
    }
  }

  function render(item, timing, target) {
    output.textContent = item.text;
    output.lang = target;
    const facts = [];
    if (item.model) facts.push(`Model ${item.model}`);
    if (item.detected_language) {
      const detected = item.detected_language;
      facts.push(`detected ${nameOf(detected.language)} (${Math.round(100 * detected.confidence)}%)`);
    }
    if (typeof item.score === "number") facts.push(`score ${formatScore(item.score)}`);
    if (timing) facts.push(`${Math.round(timing.queue_ms + timing.inference_ms)} ms`);
    meta.textContent = facts.join(" · ");

    const variants = [{text: item.text, score: item.score}, ...(item.alternatives ?? [])];
    alternativesList.replaceChildren(...variants.map((variant, rank) => {
      const li = document.createElement("li");
      li.lang = target;
      const text = document.createElement("span");
      text.textContent = variant.text;
      li.append(text);
      if (typeof variant.score === "number" || rank === 0) {
        const score = document.createElement("span");
        score.className = "score";
        score.lang = "en";
        score.textContent = [typeof variant.score === "number" ? `score ${formatScore(variant.score)}` : "",
                             rank === 0 ? "(best)" : ""].filter(Boolean).join(" ");
        li.append(score);
      }
      return li;
    }));
    alternativesBlock.hidden = item.model === null || item.model === undefined;

    const sentences = item.attention ?? [];
    heatmap.replaceChildren(...sentences.map((sentence, index) => heatmapTable(sentence, index, sentences.length)));
    const alignments = item.alignment ?? [];
    wordAlignment.replaceChildren(...alignments.map((sentence, index) => alignmentGrid(sentence, index,
                                                                                       alignments.length)));
    attentionBlock.hidden = sentences.length === 0 && alignments.length === 0;
    showView();
    showResultState("done");
  }

  /** Piece attention or word alignment, as the toggle says. */
  function showView() {
    const words = document.querySelector('input[name="attention-view"]:checked')?.value === "words";
    pieceView.hidden = words;
    wordView.hidden = !words;
  }

  function formatScore(score) {
    return score.toFixed(3).replace("-", "\u2212");
  }

  function shade(weight) {
    const w = Math.min(Math.max(weight, 0), 1);
    const [r, g, b] = LOW.map((low, i) => Math.round(low + (HIGH[i] - low) * w));
    return `rgb(${r}, ${g}, ${b})`;
  }

  /** One sentence's alignment as a table: rows = target tokens, columns = source tokens. */
  function heatmapTable(sentence, index, count) {
    const {source_tokens: sources, target_tokens: targets, weights} = sentence;
    const table = document.createElement("table");
    table.className = "heatmap";
    table.dataset.testid = "attention-sentence";
    table.dataset.sentence = String(index);
    table.dataset.rows = String(targets.length);
    table.dataset.cols = String(sources.length);

    const caption = document.createElement("figcaption");
    caption.id = `attention-caption-${index}`;
    const prefix = count > 1 ? `Sentence ${index + 1}: ` : "";
    caption.textContent = `${prefix}“${sentence.source}” → “${sentence.text}”`;
    table.setAttribute("aria-labelledby", caption.id);

    const head = table.createTHead().insertRow();
    const corner = document.createElement("th");
    corner.innerHTML = '<span class="visually-hidden">Target token \\ source token</span>';
    head.append(corner);
    for (const token of sources) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = token;
      head.append(th);
    }

    const body = table.createTBody();
    targets.forEach((targetToken, row) => {
      const tr = body.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = targetToken;
      tr.append(th);
      sources.forEach((sourceToken, col) => {
        const weight = weights[row][col];
        const td = tr.insertCell();
        td.dataset.weight = String(weight);
        td.dataset.row = String(row);
        td.dataset.col = String(col);
        td.title = `${targetToken} ← ${sourceToken}: ${weight.toFixed(4)}`;
        td.style.backgroundColor = shade(weight);
        td.tabIndex = row === 0 && col === 0 ? 0 : -1;
        const hidden = document.createElement("span");
        hidden.className = "visually-hidden";
        hidden.textContent = weight.toFixed(4);
        td.append(hidden);
      });
    });

    table.addEventListener("mouseover", (event) => showCell(event.target.closest("td")));
    table.addEventListener("focusin", (event) => showCell(event.target.closest("td")));
    table.addEventListener("mouseleave", () => clearActive(table));
    table.addEventListener("keydown", (event) => moveFocus(table, event));

    const scroller = document.createElement("div");
    scroller.className = "heatmap-scroll";
    scroller.append(table);
    const figure = document.createElement("figure");
    figure.className = "heatmap-figure";
    figure.append(caption, scroller);
    return figure;
  }

  /** One sentence's word alignment as a grid: rows = target words, columns = source words, links filled. */
  function alignmentGrid(sentence, index, count) {
    const {source_words: sources, target_words: targets} = sentence;
    const links = new Set(sentence.alignment.split(" ").filter(Boolean));  // "i-j": source i, target j
    const table = document.createElement("table");
    table.className = "heatmap alignment";
    table.dataset.testid = "alignment-sentence";
    table.dataset.sentence = String(index);

    const caption = document.createElement("figcaption");
    caption.id = `alignment-caption-${index}`;
    const prefix = count > 1 ? `Sentence ${index + 1}: ` : "";
    caption.textContent = `${prefix}“${sentence.source}” → “${sentence.text}”`;
    table.setAttribute("aria-labelledby", caption.id);

    const head = table.createTHead().insertRow();
    const corner = document.createElement("th");
    corner.innerHTML = '<span class="visually-hidden">Target word \\ source word</span>';
    head.append(corner);
    for (const word of sources) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = word;
      head.append(th);
    }
    const body = table.createTBody();
    targets.forEach((targetWord, row) => {
      const tr = body.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = targetWord;
      tr.append(th);
      sources.forEach((sourceWord, col) => {
        const td = tr.insertCell();
        const linked = links.has(`${col}-${row}`);
        td.dataset.linked = String(linked);
        td.dataset.row = String(row);
        td.dataset.col = String(col);
        if (linked) {
          td.title = `${targetWord} ← ${sourceWord}`;
          const hidden = document.createElement("span");
          hidden.className = "visually-hidden";
          hidden.textContent = "linked";
          td.append(hidden);
        }
      });
    });

    const pharaoh = document.createElement("p");
    pharaoh.className = "pharaoh";
    pharaoh.dataset.testid = "alignment-pharaoh";
    pharaoh.textContent = sentence.alignment;
    const scroller = document.createElement("div");
    scroller.className = "heatmap-scroll";
    scroller.append(table);
    const figure = document.createElement("figure");
    figure.className = "heatmap-figure";
    figure.append(caption, scroller, pharaoh);
    return figure;
  }

  function showCell(td) {
    if (!td || !td.dataset.weight) return;
    const table = td.closest("table");
    const row = Number(td.dataset.row);
    const col = Number(td.dataset.col);
    const targetToken = table.tBodies[0].rows[row].cells[0].textContent;
    const sourceToken = table.tHead.rows[0].cells[col + 1].textContent;
    readout.textContent = `Target “${targetToken}” attends to source “${sourceToken}”: ` +
                          `weight ${Number(td.dataset.weight).toFixed(4)}`;
    clearActive(table);
    table.tBodies[0].rows[row].cells[0].classList.add("active");
    table.tHead.rows[0].cells[col + 1].classList.add("active");
  }

  function clearActive(table) {
    for (const th of table.querySelectorAll("th.active")) th.classList.remove("active");
  }

  /** Arrow keys, Home and End move between cells (one cell per table is in the tab order). */
  function moveFocus(table, event) {
    const td = event.target.closest("td");
    if (!td) return;
    const rows = Number(table.dataset.rows);
    const cols = Number(table.dataset.cols);
    let row = Number(td.dataset.row);
    let col = Number(td.dataset.col);
    switch (event.key) {
      case "ArrowUp": row = Math.max(row - 1, 0); break;
      case "ArrowDown": row = Math.min(row + 1, rows - 1); break;
      case "ArrowLeft": col = Math.max(col - 1, 0); break;
      case "ArrowRight": col = Math.min(col + 1, cols - 1); break;
      case "Home": col = 0; break;
      case "End": col = cols - 1; break;
      default: return;
    }
    event.preventDefault();
    const next = table.tBodies[0].rows[row].cells[col + 1];
    td.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  }

  // ---- small helpers and wiring -------------------------------------------------------------------------------

  function setStatus(text) {
    status.textContent = text;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function updateCharCount() {
    const n = input.value.length;
    charCount.textContent = `${n} character${n === 1 ? "" : "s"}`;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!button.disabled) translate();
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  sourceSelect.addEventListener("change", fillTargets);
  targetSelect.addEventListener("change", () => { updateSwap(); showModelDomain(); });
  swapButton.addEventListener("click", swap);
  input.addEventListener("input", updateCharCount);
  for (const choice of viewChoices) choice.addEventListener("change", showView);

  setStatus("Loading languages…");
  loadLanguages();
})();
