// The playground: tabs enabled from GET /v1/models, one run loop for every tab.

import { buildRequest, curlCommand, listModels, streamGenerate } from "./api.js";
import { TABS, formReader } from "./tabs.js";

const KEY_STORAGE = "mmntp.apiKey";
const keyInput = document.getElementById("api-key");
const apiKey = () => keyInput.value.trim();

const NAMES = {
  MODALITY_TEXT: "text",
  MODALITY_TIMESERIES: "time series",
  MODALITY_IMAGE: "images",
  MODALITY_AUDIO: "audio",
  MODALITY_MOTION: "motion",
};

function selectTab(button) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab === button;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !selected;
  }
}

/** Enable the tabs of the modalities the (first) model generates; say why others are off. */
async function loadModels() {
  const info = document.getElementById("model-info");
  let models;
  try {
    models = await listModels(apiKey());
  } catch (e) {
    const locked = e.httpStatus === 401;
    info.textContent = locked
      ? "Enter the server's API key to begin."
      : `No model list: ${e.message}`;
    info.dataset.state = locked ? "locked" : "failed";
    return;
  }
  const model = models[0];
  if (!model) {
    info.textContent = "This server serves no model.";
    info.dataset.state = "failed";
    return;
  }
  const outputs = new Set(model.outputModalities || []);
  const params = Number(model.parameters || 0).toLocaleString("en");
  const makes = [...outputs].map((m) => NAMES[m]).filter(Boolean).join(", ");
  info.textContent = `Model ${model.name} (${params} parameters) generates ${makes}`;
  info.dataset.state = "ready";
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const served = outputs.has(tab.dataset.modality);
    tab.disabled = !served;
    const what = NAMES[tab.dataset.modality];
    tab.title = served ? "" : `model '${model.name}' does not generate ${what}`;
    tab.querySelector(".reason")?.remove();
    if (!served) {
      const reason = document.createElement("small"); // textContent: a model name is not HTML
      reason.className = "reason";
      reason.textContent = tab.title;
      tab.append(reason);
    }
  }
  const current = document.querySelector("[role=tab][aria-selected=true]");
  if (!current || current.disabled) selectTab(document.querySelector("[role=tab]:not(:disabled)"));
}

/** Show `error` under the form and mark the inputs of the field it names. */
function showError(panel, error) {
  const box = panel.querySelector(".error");
  const field = (error.field || "").replace(/\[\d+\]/g, ""); // prompt[0].text -> prompt.text
  box.hidden = false;
  const named = !field || error.message.startsWith(field);
  const message = named ? error.message : `${field}: ${error.message}`;
  box.textContent = error.grpcStatus ? `${message} (${error.grpcStatus})` : message;
  const related = (a, b) => a === b || a.startsWith(`${b}.`) || b.startsWith(`${a}.`);
  for (const input of panel.querySelectorAll("[data-field]")) {
    if (field && related(input.dataset.field, field)) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-errormessage", box.id);
    }
  }
  panel.querySelector("[aria-invalid=true]")?.focus();
}

function clearError(panel) {
  panel.querySelector(".error").hidden = true;
  for (const input of panel.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
}

const ms = (seconds) => `${Math.round(seconds * 1000)} ms`;

function timingText(firstChunk, total, final) {
  let text = `first chunk ${ms(firstChunk ?? total)} · total ${ms(total)}`;
  if (final) {
    const t = final.timings || {};
    const reason = (final.finishReason || "").replace("FINISH_REASON_", "").toLowerCase();
    text += ` (server: first ${ms(t.firstChunkSeconds || 0)}, total ${ms(t.totalSeconds || 0)};`;
    text += ` ${final.usage?.outputTokens || 0} output tokens, ${reason})`;
  }
  return text;
}

/** Submit one tab's form: show the curl, stream the chunks into the tab's view, time it. */
async function run(panel, tab) {
  clearError(panel);
  let request;
  try {
    request = tab.request(formReader(panel.querySelector("form")));
  } catch (e) {
    showError(panel, e);
    return;
  }
  const body = buildRequest(request);
  panel.querySelector(".curl").value = curlCommand(body, location.origin, Boolean(apiKey()));
  const view = tab.start(panel, request);
  const timing = panel.querySelector(".timing");
  const [button, stop] = [panel.querySelector("button[type=submit]"), panel.querySelector(".stop")];
  const abort = new AbortController(); // Stop closes the stream: the server aborts the request
  stop.onclick = () => abort.abort();
  [button.disabled, stop.disabled] = [true, false];
  panel.dataset.state = "running";
  timing.textContent = "waiting for the first chunk…";
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  let first = null;
  let final = null;
  try {
    for await (const message of streamGenerate(body, apiKey(), abort.signal)) {
      if (message.final) final = message.final;
      else {
        first ??= elapsed();
        tab.chunk(view, message);
        timing.textContent = `first chunk ${ms(first)} · streaming…`;
      }
    }
    if (!final) throw new Error("the stream ended before its final message");
  } catch (e) {
    // an ApiError, or the page's own (stopped, a network failure, a frame it cannot draw)
    if (abort.signal.aborted) tab.stop?.(view);
    else showError(panel, e);
  } finally {
    panel.dataset.streamEndAt = String(performance.now());
    tab.end?.(view);
    const stopped = abort.signal.aborted ? " · stopped" : "";
    timing.textContent = timingText(first, elapsed(), final) + stopped;
    panel.dataset.state = final ? "done" : abort.signal.aborted ? "stopped" : "failed";
    [button.disabled, stop.disabled] = [false, true];
  }
}

function setUp() {
  keyInput.value = localStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, apiKey());
    loadModels();
  });
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      // The WAI-ARIA tabs pattern: arrow keys move between the enabled tabs.
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const enabled = tabs.filter((t) => !t.disabled);
      const next = enabled.at((enabled.indexOf(tab) + step) % enabled.length);
      selectTab(next);
      next.focus();
    });
  }
  const template = document.getElementById("run-block");
  for (const panel of document.querySelectorAll("[role=tabpanel]")) {
    panel.append(template.content.cloneNode(true));
    panel.querySelector(".error").id = `${panel.id}-error`;
    const form = panel.querySelector("form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(panel, TABS[panel.dataset.tab]);
    });
    panel.querySelector(".copy").addEventListener("click", async (event) => {
      await navigator.clipboard.writeText(panel.querySelector(".curl").value);
      event.target.textContent = "Copied";
      setTimeout(() => (event.target.textContent = "Copy"), 1500);
    });
  }
  setUpForecastInput(document.getElementById("panel-forecast"));
  setUpImageInput(document.getElementById("panel-image"));
  selectTab(document.getElementById("tab-text"));
  loadModels();
}

/** A sample seasonal series to start from, and the upload button filling the text box. */
function setUpForecastInput(panel) {
  const csv = panel.querySelector("[name=csv]");
  csv.value = Array.from({ length: 72 }, (_, i) =>
    (20 + 0.05 * i + 4 * Math.sin((2 * Math.PI * i) / 12)).toFixed(2),
  ).join("\n");
  panel.querySelector("[name=file]").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) csv.value = await file.text();
  });
}

/** Steps apply to the continuous heads only: the field is off while vq is chosen. */
function setUpImageInput(panel) {
  const head = panel.querySelector("[name=head]");
  const sync = () => (panel.querySelector("[name=steps]").disabled = head.value === "vq");
  head.addEventListener("change", sync);
  sync();
}

setUp();
