// The polysteer playground: talks only to the server that served it (see docs/playground.md).
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
};

const state = {
  info: null,
  tab: "text",
  controls: { text: null, image: null, voice: null },  // listings from /v1/playground/controls
  features: [],          // feature sliders the user added (text model)
  values: new Map(),     // slider id -> value, shared by every tab ("the same sliders")
  generated: false,      // a text generation was shown: moving a slider runs it again
  running: false,
  again: false,
  tokens: [],
  timer: null,
};

// -- talking to the server ---------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = sessionStorage.getItem("polysteer-api-key");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function api(path, { method = "GET", body, raw = false } = {}) {
  let resp;
  try {
    resp = await fetch(path, { method, headers: headers(body !== undefined),
                               body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "cannot reach the server (" + err.message + "); is polysteer serve still running?");
  }
  if (!resp.ok) {
    let message = resp.statusText, code = null;
    try {
      const data = await resp.json();
      if (data && data.error) { message = data.error.message; code = data.error.code; }
    } catch (_) { /* not JSON: keep the status text */ }
    throw new ApiError(resp.status, message, code);
  }
  return raw ? resp : resp.json();
}

function explain(err) {
  if (!(err instanceof ApiError)) return "Something went wrong in the page: " + err.message;
  if (err.status === 0) return "The server cannot be reached: " + err.message;
  if (err.status === 429) return "The server is busy: " + err.message + " Try again in a moment.";
  if (err.status === 503) return "The server cannot do this now: " + err.message;
  if (err.status === 401) return "The server needs an API key (open 'API key' above): " + err.message;
  if (err.status >= 400 && err.status < 500)
    return `The server refused the request (HTTP ${err.status}${err.code ? ", " + err.code : ""}): ${err.message}`;
  return `The server failed (HTTP ${err.status}): ${err.message}`;
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "info" ? "info" : "";
  box.hidden = false;
}

function clearMessage() { $("message").hidden = true; $("message").textContent = ""; }

async function guarded(button, status, work, clear = true) {
  if (button) button.disabled = true;
  try {
    if (clear) clearMessage();
    return await work();
  } catch (err) {
    if (status) status.textContent = "";
    showMessage(explain(err));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// -- sliders -----------------------------------------------------------------------------------
const percent = (v) => Math.round(v * 100) + "%";
const sliderId = (c) => "slider-" + c.id.replace(/[^A-Za-z0-9_-]/g, "_");

function modalitiesShown() {
  return state.tab === "create" ? ["text", "image", "voice"] : [state.tab];
}

function controlsShown() {
  const seen = new Map();
  for (const m of modalitiesShown()) {
    for (const c of state.controls[m] || []) if (!seen.has(c.id)) seen.set(c.id, c);
    if (m === "text") for (const c of state.features) seen.set(c.id, c);
  }
  return [...seen.values()];
}

// The one place a slider's extras are drawn: the "calibrated" badge and the link to the style's
// side-effect audit (the listing's `audit` field: an HTML report made on the server).
function sliderExtras(c) {
  const [lo, hi] = c.range;
  const badge = el("span", { class: "badge" + (c.calibrated ? " calibrated" : ""),
                             text: c.calibrated ? `calibrated ${percent(lo)}–${percent(hi)}`
                                                : `range ${percent(lo)}–${percent(hi)}, not calibrated` });
  const cal = c.calibration;
  if (cal) {  // what 100% stands for on this model, and where the concept starts to show
    badge.title = `100% = the strongest setting that stayed coherent on ${cal.model} ` +
      `(raw intensity ${cal.high})` +
      (cal.calibrated_low != null ? `; the concept starts to show near ${percent(cal.calibrated_low)}` : "");
  }
  const extras = [badge];
  if (c.audit) extras.push(el("a", { href: c.audit, text: "side effects (audit)", class: "audit",
                                     target: "_blank", rel: "noopener",
                                     title: "features, next-token KL and measures this style moves " +
                                            "on neutral probes (takes a few seconds)" }));
  return extras;
}

function renderSliders() {
  const box = $("sliders");
  box.replaceChildren();
  const filter = $("concept-filter").value.trim().toLowerCase();
  const shown = controlsShown().filter((c) => !filter ||
      (c.name + " " + (c.description || "")).toLowerCase().includes(filter));
  for (const c of shown) {
    const id = sliderId(c);
    const [lo, hi] = c.range;
    const value = state.values.get(c.id) ?? 0;
    const out = el("output", { for: id, id: id + "-value", text: percent(value) });
    const input = el("input", { type: "range", id, min: lo, max: hi, step: (hi - lo) / 20,
                                value, "data-control": c.id,
                                "aria-describedby": id + "-about",
                                "aria-valuetext": `${c.name} ${percent(value)}` });
    input.addEventListener("input", () => {
      const v = parseFloat(input.value);
      state.values.set(c.id, v);
      out.textContent = percent(v);
      input.setAttribute("aria-valuetext", `${c.name} ${percent(v)}`);
      updateCaption();
    });
    input.addEventListener("change", () => slidersMoved());
    const remove = c.kind === "feature" ? el("button", { type: "button", class: "linkish",
        text: "remove", "aria-label": "remove the slider " + c.name,
        onclick: () => { state.features = state.features.filter((f) => f.id !== c.id);
                         state.values.delete(c.id); renderSliders(); slidersMoved(); } }) : "";
    box.append(el("div", { class: "slider" },
      el("label", { for: id, text: c.name }),
      input,
      el("div", { class: "meta" }, out, ...sliderExtras(c), remove),
      el("div", { class: "small", id: id + "-about",
                  text: (c.description || "") + (c.not_applied && c.not_applied.length
                        ? " (partly: " + c.not_applied.join("; ") + ")" : "") })));
  }
  $("sliders-empty").hidden = shown.length > 0;
  const names = modalitiesShown().map((m) => modelName(m)).join(", ");
  $("sliders-for").textContent = `Sliders for ${names}.`;
  updateCaption();
}

function modelName(m) {
  if (!state.info) return m;
  return `${state.info.modalities[m].model} (${m})`;
}

function active(modalities) {
  const ids = new Set();
  for (const m of modalities) {
    for (const c of state.controls[m] || []) ids.add(c.id);
    if (m === "text") for (const c of state.features) ids.add(c.id);
  }
  const all = [...(state.controls.text || []), ...(state.controls.image || []),
               ...(state.controls.voice || []), ...state.features];
  const out = [], seen = new Set();
  for (const c of all) {
    const v = state.values.get(c.id) ?? 0;
    if (!v || seen.has(c.id) || !ids.has(c.id)) continue;
    seen.add(c.id);
    out.push(c.kind === "style" ? { kind: "style", name: c.name, value: v }
                                : { kind: "feature", dictionary: c.dictionary, feature: c.feature, value: v });
  }
  return out;
}

function allSliders() {
  const known = new Map();
  for (const c of [...(state.controls.text || []), ...(state.controls.image || []),
                   ...(state.controls.voice || []), ...state.features]) known.set(c.id, c);
  const out = [];
  for (const [id, v] of state.values) {
    const c = known.get(id);
    if (!c || !v) continue;
    out.push(c.kind === "style" ? { kind: "style", name: c.name, value: v }
                                : { kind: "feature", dictionary: c.dictionary, feature: c.feature, value: v });
  }
  return out;
}

function describe(sliders) {
  return sliders.map((s) => (s.kind === "style" ? s.name : `${s.dictionary}#${s.feature}`) + " " + percent(s.value)).join(", ");
}

function updateCaption() {
  const s = active(["text"]);
  $("steered-caption").textContent = s.length ? "Steered: " + describe(s) : "Steered (move a slider)";
}

// The text run's state, for people (the status line) and for tests (body[data-text-run]):
// "scheduled" after a slider moved, "running" while the two streams run, "idle" after.
function textRun(value) { document.body.dataset.textRun = value; }

function slidersMoved() {
  if (state.tab !== "text" || !state.generated) return;
  clearTimeout(state.timer);
  textRun("scheduled");
  state.timer = setTimeout(() => runText(true), 350);
}

function steeringField(sliders) {
  const field = sliders.filter((s) => s.kind === "style").map((s) => ({ style: s.name, intensity: s.value }));
  const features = sliders.filter((s) => s.kind === "feature")
    .map((s) => ({ dictionary: s.dictionary, feature: s.feature, weight: s.value }));
  if (features.length) field.push({ features, intensity: 1.0 });
  return field;
}

async function loadControls(modality) {
  const status = { image: $("image-model"), voice: $("voice-model") }[modality];
  if (status) status.textContent = `Loading the ${modality} model ${state.info.modalities[modality].model}…`;
  const data = await api("/v1/playground/controls?modality=" + modality);
  state.controls[modality] = data.data;
  state.info.modalities[modality].loaded = true;
  if (status) status.textContent = `${modality} model: ${data.model}; ${data.data.length} styles apply to it.`;
  renderSliders();
}

// -- text: two streams side by side ------------------------------------------------------------
async function streamInto(target, steering) {
  const body = { model: state.info.model, stream: true,
                 max_tokens: Math.max(1, Math.min(parseInt($("max-tokens").value, 10) || 32, state.info.max_tokens)),
                 messages: [{ role: "user", content: $("prompt").value }] };
  if (steering.length) body.steering = steering;
  target.dataset.state = "streaming";
  target.textContent = "";
  const resp = await api("/v1/chat/completions", { method: "POST", body, raw: true });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") { target.dataset.state = "done"; return; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(500, chunk.error.message, chunk.error.code);
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) target.textContent += delta.content;
      }
    }
  }
  target.dataset.state = "done";
}

async function runText(automatic = false) {
  if (state.running) { state.again = true; return; }
  if (!$("prompt").value.trim()) { showMessage("Type a prompt first."); textRun("idle"); return; }
  state.running = true;
  textRun("running");
  const button = $("generate"), status = $("generate-status");
  status.textContent = "generating…";
  await guarded(button, status, async () => {
    const sliders = active(["text"]);
    try {
      await Promise.all([streamInto($("out-unsteered"), []), streamInto($("out-steered"), steeringField(sliders))]);
    } catch (err) {
      for (const id of ["out-unsteered", "out-steered"]) if ($(id).dataset.state === "streaming") $(id).dataset.state = "error";
      throw err;
    }
    state.generated = true;
    status.textContent = sliders.length ? "steered by " + describe(sliders) : "no slider moved: both are the plain model";
  }, !automatic);  // a rerun after a slider moved leaves a message the user has not read yet
  state.running = false;
  if (state.again) { state.again = false; runText(automatic); } else textRun("idle");
}

// -- features per token, feature cards, search ------------------------------------------------
async function inspectPrompt() {
  const dictionary = $("dictionary").value;
  if (!dictionary) { showMessage("No dictionary fits the served model, so there is nothing to read."); return; }
  await guarded($("inspect"), $("inspect-status"), async () => {
    $("inspect-status").textContent = "reading…";
    const data = await api("/v1/inspect", { method: "POST", body: { text: $("prompt").value, dictionary, top: 5 } });
    state.tokens = data.tokens;
    const box = $("tokens");
    box.replaceChildren();
    data.tokens.forEach((t, i) => {
      const peak = t.features.length ? Math.abs(t.features[0].value) : 0;
      const b = el("button", { type: "button", class: "token", text: t.text || t.token,
                               "aria-describedby": "token-features", "data-index": i,
                               "aria-label": `token ${JSON.stringify(t.text)}: strongest ${t.features.length ? t.features[0].label : "none"}` });
      b.style.background = `rgba(36, 87, 166, ${Math.min(0.5, peak / 8)})`;
      b.addEventListener("mouseenter", () => showTokenFeatures(b, t));
      b.addEventListener("focus", () => showTokenFeatures(b, t));
      b.addEventListener("click", () => showTokenFeatures(b, t, true));
      box.append(b);
    });
    $("inspect-status").textContent = `${data.tokens.length} tokens read with ${dictionary}`;
  });
}

function showTokenFeatures(anchor, token, focusFirst = false) {
  const pop = $("token-features");
  const list = el("ul");
  for (const f of token.features) {
    list.append(el("li", {},
      el("button", { type: "button", class: "linkish", text: `${f.label}`,
                     "aria-label": `feature ${f.index}, ${f.label}, value ${f.value.toFixed(2)}: open its card`,
                     onclick: () => openCard($("dictionary").value, f.index) }),
      ` #${f.index}  ${f.value.toFixed(2)}`));
  }
  pop.replaceChildren(el("strong", { text: JSON.stringify(token.text) }), list);
  const r = anchor.getBoundingClientRect();
  pop.style.left = (window.scrollX + r.left) + "px";
  pop.style.top = (window.scrollY + r.bottom + 4) + "px";
  pop.hidden = false;
  if (focusFirst) { const first = pop.querySelector("button"); if (first) first.focus(); }
}

async function openCard(dictionary, feature) {
  await guarded(null, null, async () => {
    const c = await api("/v1/playground/feature", { method: "POST",
                                                     body: { dictionary, feature, text: $("prompt").value } });
    const card = $("feature-card");
    const parts = [el("h3", { text: `Feature ${c.index} of ${c.dictionary}: ${c.label}` }),
                   el("p", { class: "small", text: `${c.kind} at ${c.site}` })];
    if (c.evidence) {
      const e = c.evidence;
      parts.push(el("p", { class: "small", text: `label ${e.source}; fires on ${(100 * e.density).toFixed(2)}% of ${e.positions} positions; ` +
        (e.effect_score === null ? "effect not verified" : `effect ${e.effect_score.toFixed(3)}${e.flagged ? " (the label does not hold up)" : ""}`) }));
      if (e.contexts.length) {
        parts.push(el("h4", { text: "Top contexts" }));
        const ul = el("ul");
        for (const x of e.contexts) ul.append(el("li", {}, el("code", { text: x.value.toFixed(2) }), " ", x.text));
        parts.push(ul);
      }
      if (e.promoted.length) parts.push(el("p", { text: "Promotes: " + e.promoted.join(", ") }));
    } else {
      parts.push(el("p", { class: "small", text: "No label evidence recorded for this dictionary (polysteer labels writes it)." }));
    }
    if (c.in_text.length) {
      parts.push(el("h4", { text: "Where it fires in the prompt" }));
      const peak = Math.max(1e-6, ...c.in_text.map((t) => Math.abs(t.value)));
      const ul = el("ul");
      for (const t of c.in_text) {
        const bar = el("span", { class: "bar" });
        bar.style.width = (4 * Math.abs(t.value) / peak) + "em";
        ul.append(el("li", {}, el("code", { text: JSON.stringify(t.text) }), " ", bar, ` ${t.value.toFixed(2)}`));
      }
      parts.push(ul);
    }
    if (c.similar.length) {
      parts.push(el("h4", { text: "Nearest features" }));
      const ul = el("ul");
      for (const s of c.similar) ul.append(el("li", {}, el("button", { type: "button", class: "linkish",
        text: `#${s.index} ${s.label}`, onclick: () => openCard(dictionary, s.index) }), ` ${s.score.toFixed(2)}`));
      parts.push(ul);
    }
    parts.push(el("button", { type: "button", text: "Add a slider for this feature", id: "add-feature-slider",
                              onclick: () => addFeature(c) }));
    card.replaceChildren(...parts);
    card.hidden = false;
  });
}

function addFeature(card, value = 0) {
  const id = `feature:${card.dictionary}#${card.index}`;
  if (!state.features.some((f) => f.id === id)) {
    state.features.push({ id, kind: "feature", dictionary: card.dictionary, feature: card.index,
                          name: `${card.label} (#${card.index})`, description: `${card.dictionary} feature ${card.index}`,
                          range: card.range, calibrated: card.calibrated, audit: null });
  }
  if (value) state.values.set(id, value);
  renderSliders();
  const input = document.querySelector(`[data-control="${CSS.escape(id)}"]`);
  if (input && !value) input.focus();
}

async function addFeatureByIndex(dictionary, index, value) {
  const card = await api("/v1/playground/feature", { method: "POST", body: { dictionary, feature: index } });
  addFeature(card, value);
}

async function search(body) {
  const dictionary = $("dictionary").value;
  await guarded(null, $("search-status"), async () => {
    $("search-status").textContent = "searching…";
    const data = await api("/v1/features/search", { method: "POST", body: { dictionary, top: 10, ...body } });
    const ul = $("search-results");
    ul.replaceChildren();
    for (const f of data.data) {
      ul.append(el("li", {},
        el("button", { type: "button", class: "linkish", text: `#${f.index} ${f.label}`,
                       onclick: () => openCard(dictionary, f.index) }),
        ` score ${Number(f.score).toFixed(3)} `,
        el("button", { type: "button", text: "+ slider", "aria-label": `add a slider for feature ${f.index}, ${f.label}`,
                       onclick: () => guarded(null, null, () => addFeatureByIndex(dictionary, f.index, 0)) })));
    }
    $("search-status").textContent = `${data.data.length} features in ${dictionary}`;
  });
}

// -- styles: pick, save, load -----------------------------------------------------------------
async function refreshStyles() {
  const data = await api("/v1/styles");
  const picker = $("style-picker");
  const keep = picker.value;
  picker.replaceChildren(el("option", { value: "", text: "choose a style to load…" }));
  for (const s of data.data) picker.append(el("option", { value: s.name, text: `${s.name} (${s.source})` }));
  picker.value = keep;
}

function resetSliders() {
  state.values.clear();
  renderSliders();
}

async function loadStyle(name) {
  if (!name) return;
  await guarded(null, null, async () => {
    const data = await api("/v1/styles/" + encodeURIComponent(name));
    const description = data.style.description || "";
    state.values.clear();
    if (description.startsWith("playground: ")) {  // saved here: set each slider again
      for (const part of description.slice(12).split(", ")) {
        const eq = part.lastIndexOf("=");
        const key = part.slice(0, eq), value = parseFloat(part.slice(eq + 1));
        const hash = key.lastIndexOf("#");
        if (hash > 0) await addFeatureByIndex(key.slice(0, hash), parseInt(key.slice(hash + 1), 10), value);
        else state.values.set("style:" + key, value);
      }
    } else {
      const known = Object.values(state.controls).some((list) => (list || []).some((c) => c.id === "style:" + name));
      if (!known) showMessage(`The style ${name} does not apply to the models loaded so far.`, "info");
      state.values.set("style:" + name, 1.0);
    }
    renderSliders();
    $("save-status").textContent = `Loaded ${name}.`;
    slidersMoved();
  });
}

async function saveStyle() {
  const name = $("style-name").value.trim();
  await guarded($("save-style"), $("save-status"), async () => {
    if (!name) throw new Error("give the style a name first");
    const sliders = allSliders();
    const composed = await api("/v1/playground/compose", { method: "POST", body: { sliders, name } });
    await api("/v1/styles/" + encodeURIComponent(name), { method: "PUT", body: { style: composed.style } });
    $("style-yaml").textContent = composed.yaml;
    $("style-yaml").hidden = false;
    $("save-status").textContent = `Saved as ${name} (${describe(sliders)}).`;
    await refreshStyles();
    for (const m of ["text", "image", "voice"]) if (state.controls[m]) await loadControls(m);
  });
}

// -- image, voice, create ------------------------------------------------------------------------
function image(src, alt) { return el("img", { src, alt, class: "generated" }); }

async function draw() {
  await guarded($("draw"), $("draw-status"), async () => {
    if (!state.controls.image) await loadControls("image");
    const sliders = active(["image"]);
    $("draw-status").textContent = "drawing…";
    const data = await api("/v1/playground/draw", { method: "POST", body: {
      sliders, seed: parseInt($("image-seed").value, 10) || 0, steps: parseInt($("image-steps").value, 10) || 25 } });
    $("image-unsteered").replaceChildren(image(data.unsteered, "the unsteered picture"),
                                         el("p", { class: "small", text: data.described.unsteered }));
    $("image-steered").replaceChildren(image(data.steered, "the steered picture: " + (describe(sliders) || "no slider moved")),
                                       el("p", { class: "small", text: data.described.steered }));
    $("image-notes").replaceChildren(...data.not_applied.map((n) => el("li", { text: "not applied: " + n })));
    $("draw-status").textContent = sliders.length ? "steered by " + describe(sliders) : "no slider moved: both are the plain model";
  });
}

const STOPS = [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]];
function paintSpectrogram(canvas, spec) {
  const bytes = Uint8Array.from(atob(spec.data), (ch) => ch.charCodeAt(0));
  canvas.width = spec.width;
  canvas.height = spec.height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(spec.width, spec.height);
  for (let row = 0; row < spec.height; row++) {
    for (let col = 0; col < spec.width; col++) {
      const v = bytes[row * spec.width + col] / 255 * (STOPS.length - 1);
      const i = Math.min(STOPS.length - 2, Math.floor(v)), f = v - i;
      const p = ((spec.height - 1 - row) * spec.width + col) * 4;  // low frequencies at the bottom
      for (let k = 0; k < 3; k++) img.data[p + k] = STOPS[i][k] + f * (STOPS[i + 1][k] - STOPS[i][k]);
      img.data[p + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

function voiceFigure(part, label) {
  const canvas = el("canvas", { class: "spectrogram", role: "img",
                                "aria-label": `spectrogram of the ${label} speech, ${part.seconds.toFixed(1)} s, 0 to ${part.spectrogram.khz} kHz` });
  paintSpectrogram(canvas, part.spectrogram);
  return [el("audio", { controls: true, src: part.audio, "aria-label": `the ${label} speech` }), canvas,
          el("p", { class: "small", text: `${part.seconds.toFixed(2)} s` })];
}

async function speak() {
  await guarded($("speak"), $("speak-status"), async () => {
    if (!state.controls.voice) await loadControls("voice");
    const sliders = active(["voice"]);
    $("speak-status").textContent = "speaking…";
    const data = await api("/v1/playground/speak", { method: "POST", body: {
      text: $("speech").value, sliders, seed: parseInt($("voice-seed").value, 10) || 0 } });
    $("voice-unsteered").replaceChildren(...voiceFigure(data.unsteered, "unsteered"));
    $("voice-steered").replaceChildren(...voiceFigure(data.steered, "steered"));
    $("voice-notes").replaceChildren(...data.not_applied.map((n) => el("li", { text: "not applied: " + n })));
    $("speak-status").textContent = sliders.length ? "steered by " + describe(sliders) : "no slider moved: both are the plain model";
  });
}

function measures(part) {
  const rows = Object.entries(part.measures).map(([name, m]) => m.error
    ? el("tr", {}, el("td", { text: name }), el("td", { colspan: 3, text: "not measured: " + m.error }))
    : el("tr", {}, el("td", { text: name }), el("td", { text: fmt(m.unsteered) }), el("td", { text: fmt(m.steered) }),
         el("td", { text: m.unsteered === null || m.steered === null ? "n/a" : fmt(m.steered - m.unsteered) })));
  return el("table", {}, el("tr", {}, ...["measure", "unsteered", "steered", "change"].map((t) => el("th", { text: t }))), ...rows);
}
const fmt = (v) => (v === null || v === undefined ? "n/a" : Number(v).toPrecision(4));

async function runCreate() {
  await guarded($("create"), $("create-status"), async () => {
    for (const m of ["text", "image", "voice"]) if (!state.controls[m]) await loadControls(m);
    const sliders = active(["text", "image", "voice"]);
    if (!sliders.length) throw new Error("move a slider first: create applies the sliders' style");
    $("create-status").textContent = "writing, drawing and narrating… (this takes a while)";
    const data = await api("/v1/playground/create", { method: "POST", body: {
      prompt: $("create-prompt").value, sliders, seed: parseInt($("create-seed").value, 10) || 0 } });
    const box = $("creation");
    const story = data.parts.story, portrait = data.parts.portrait, narration = data.parts.narration;
    box.replaceChildren(
      el("h3", { text: "Story" }),
      el("div", { class: "pair" },
         el("figure", {}, el("figcaption", { text: "Unsteered" }), el("div", { class: "out", text: data.story_unsteered })),
         el("figure", {}, el("figcaption", { text: "Steered" }), el("div", { class: "out", text: data.story }))),
      measures(story),
      el("h3", { text: "Portrait" }),
      el("div", { class: "pair" },
         el("figure", {}, el("figcaption", { text: "Unsteered" }), image(portrait.unsteered, "the unsteered portrait")),
         el("figure", {}, el("figcaption", { text: "Steered" }), image(portrait.steered, "the steered portrait"))),
      measures(portrait),
      el("h3", { text: "Narration" }),
      el("div", { class: "pair" },
         el("figure", {}, el("figcaption", { text: "Unsteered" }), el("audio", { controls: true, src: narration.unsteered, "aria-label": "the unsteered narration" })),
         el("figure", {}, el("figcaption", { text: "Steered" }), el("audio", { controls: true, src: narration.steered, "aria-label": "the steered narration" }))),
      measures(narration));
    $("create-status").textContent = data.style;
  });
}

// -- tabs ------------------------------------------------------------------------------------------
const TABS = ["text", "image", "voice", "create"];

async function selectTab(name, focus = false) {
  state.tab = name;
  for (const t of TABS) {
    const tab = $("tab-" + t);
    tab.setAttribute("aria-selected", String(t === name));
    tab.tabIndex = t === name ? 0 : -1;
    $("panel-" + t).hidden = t !== name;
  }
  if (focus) $("tab-" + name).focus();
  $("token-features").hidden = true;
  renderSliders();
  await guarded(null, null, async () => {
    for (const m of modalitiesShown()) if (!state.controls[m]) await loadControls(m);
  });
}

function wireTabs() {
  for (const t of TABS) {
    const tab = $("tab-" + t);
    tab.addEventListener("click", () => selectTab(t));
    tab.addEventListener("keydown", (e) => {
      const i = TABS.indexOf(t);
      const next = { ArrowRight: TABS[(i + 1) % TABS.length], ArrowLeft: TABS[(i + TABS.length - 1) % TABS.length],
                     Home: TABS[0], End: TABS[TABS.length - 1] }[e.key];
      if (next) { e.preventDefault(); selectTab(next, true); }
    });
  }
}

// -- start ---------------------------------------------------------------------------------------
async function start() {
  wireTabs();
  const key = $("api-key");
  key.value = sessionStorage.getItem("polysteer-api-key") || "";
  $("api-key-form").addEventListener("submit", (e) => e.preventDefault());
  key.addEventListener("change", () => { sessionStorage.setItem("polysteer-api-key", key.value); connect(); });
  $("generate").addEventListener("click", () => runText());
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runText(); });
  $("inspect").addEventListener("click", () => inspectPrompt());
  $("search-go").addEventListener("click", () => search({ query: $("search-words").value }));
  $("search-words").addEventListener("keydown", (e) => { if (e.key === "Enter") search({ query: $("search-words").value }); });
  $("search-examples").addEventListener("click", () => {
    const lines = (id) => $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
    search({ positive: lines("search-positive"), negative: lines("search-negative") });
  });
  $("concept-filter").addEventListener("input", () => renderSliders());
  $("style-picker").addEventListener("change", (e) => loadStyle(e.target.value));
  $("reset-sliders").addEventListener("click", () => { resetSliders(); slidersMoved(); });
  $("save-style").addEventListener("click", () => saveStyle());
  $("draw").addEventListener("click", () => draw());
  $("speak").addEventListener("click", () => speak());
  $("create").addEventListener("click", () => runCreate());
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("token-features").hidden = true; });
  await connect();
}

async function connect() {
  await guarded(null, null, async () => {
    state.info = await api("/v1/playground/info");
    const m = state.info.modalities;
    $("model-line").textContent = `text: ${m.text.model} · image: ${m.image.model} · voice: ${m.voice.model} (loaded on first use)`;
    $("max-tokens").value = state.info.default_tokens;
    $("max-tokens").max = state.info.max_tokens;
    const dict = $("dictionary");
    dict.replaceChildren(...state.info.dictionaries.map((d) => el("option", { value: d.name, text: `${d.name} (${d.kind}, ${d.features})` })));
    await refreshStyles();
    await loadControls("text");
    document.body.dataset.ready = "true";
  });
}

start();
