// The browser page: a thin client of the /v1 API (no build step, nothing from the internet).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { files: [], learnJob: null, model: null, gap: [] };

// ---- API access -----------------------------------------------------------------------------
function headers(extra = {}) {
  const key = localStorage.getItem("gcn-api-key");
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && (body.detail || body.title);
    const extra = (body && body.errors ? body.errors : []).filter((e) => !(detail || "").includes(e.message));
    const fields = extra.length ? " (" + extra.map((e) => `${e.field}: ${e.message}`).join("; ") + ")" : "";
    throw new Error(`${detail || response.statusText || "request failed"}${fields} [HTTP ${response.status}]`);
  }
  return body;
}

// Images need the key too: fetch them as blobs and show object URLs.
async function imageURL(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(`could not load ${path} [HTTP ${response.status}]`);
  return URL.createObjectURL(await response.blob());
}

// Server-sent events over fetch (EventSource cannot send an Authorization header).
async function follow(jobId, onJob) {
  const response = await fetch(`/v1/jobs/${jobId}/events`, { headers: headers({ Accept: "text/event-stream" }) });
  if (!response.ok || !response.body) throw new Error(`could not follow job ${jobId} [HTTP ${response.status}]`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message", data = "";
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) {
        const job = JSON.parse(data);
        await onJob(job, event);
        if (event === "end") { reader.cancel(); return; }
      }
    }
  }
}

// ---- errors -----------------------------------------------------------------------------------
function showError(err) {
  const box = $("#error");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}
function clearError() { $("#error").hidden = true; }

// ---- learning ---------------------------------------------------------------------------------
function setFiles(list) {
  state.files = [...list].filter((f) => f.size > 0);
  const ul = $("#thumbs");
  ul.innerHTML = "";
  for (const f of state.files) {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = URL.createObjectURL(f);
    img.alt = f.name;
    li.append(img);
    ul.append(li);
  }
}

async function loadPresets() {
  const presets = await api("/v1/presets");
  const select = $("#preset");
  select.innerHTML = "";
  for (const p of presets) {
    const opt = document.createElement("option");
    opt.value = p.name;
    opt.textContent = `${p.name} (${p.kind}, ${p.image_size} px)`;
    opt.dataset.kind = p.kind;
    opt.dataset.description = p.description;
    select.append(opt);
  }
  select.value = "texture-fast";
  describePreset();
}

function describePreset() {
  const opt = $("#preset").selectedOptions[0];
  $("#preset-help").textContent = opt ? opt.dataset.description : "";
}

function pickPresetForKind(kind) {
  const wanted = kind === "object" ? "object-fast" : "texture-fast";
  if ([...$("#preset").options].some((o) => o.value === wanted)) $("#preset").value = wanted;
  describePreset();
}

// ---- several categories: a name and images per category ------------------------------------------
let categoryCount = 0;

function addCategoryRow() {
  const k = ++categoryCount;
  const row = document.createElement("div");
  row.className = "row category-row";
  row.innerHTML =
    `<div class="field"><label for="cat-name-${k}">Category name</label>` +
    `<input id="cat-name-${k}" class="cat-name" maxlength="40" pattern="[A-Za-z0-9_-]+" placeholder="e.g. brick"></div>` +
    `<div class="field"><label for="cat-files-${k}">Its images</label>` +
    `<input id="cat-files-${k}" class="cat-files" type="file" accept="image/png,image/jpeg,image/webp" multiple></div>` +
    `<button type="button" class="remove-category">Remove</button>`;
  row.querySelector(".remove-category").addEventListener("click", () => row.remove());
  $("#category-rows").append(row);
  return row;
}

// [{name, files}] of the filled category rows, or null when the page learns one set of images
function chosenCategories() {
  if (!$("#categories-box").open) return null;
  const rows = [...document.querySelectorAll(".category-row")]
    .map((r) => ({ name: r.querySelector(".cat-name").value.trim(), files: [...r.querySelector(".cat-files").files] }))
    .filter((c) => c.name || c.files.length);
  return rows.length ? rows : null;
}

async function uploadDataset(files, kind) {
  const form = new FormData();
  for (const f of files) form.append("images", f, f.name);
  form.append("kind", kind);
  return api("/v1/datasets", { method: "POST", body: form });
}

async function startLearning(event) {
  event.preventDefault();
  clearError();
  const categories = chosenCategories();
  if (categories) {
    if (categories.length < 2) return showError("Give at least two categories, each with a name and images.");
    const bad = categories.find((c) => !c.name || !c.files.length);
    if (bad) return showError(`Category ${bad.name || "without a name"}: give it a name and at least one image.`);
  } else if (!state.files.length) {
    return showError("Choose at least one image first.");
  }
  const button = $("#start");
  button.disabled = true;
  try {
    const kind = document.querySelector("input[name=kind]:checked").value;
    const overrides = {};
    const iterations = $("#iterations").value, size = $("#image-size").value;
    if (iterations) overrides.iterations = Number(iterations);
    if (size) overrides.image_size = Number(size);
    const body = { preset: $("#preset").value, overrides };
    if (categories) {
      body.categories = [];
      for (const c of categories) body.categories.push({ name: c.name, dataset_id: (await uploadDataset(c.files, kind)).id });
    } else {
      body.dataset_id = (await uploadDataset(state.files, kind)).id;
    }
    const job = await api("/v1/models", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    watch(job);
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

function eta(seconds) {
  if (seconds == null) return "";
  const s = Math.max(0, Math.round(seconds));
  return s >= 60 ? `about ${Math.floor(s / 60)} min ${s % 60} s left` : `about ${s} s left`;
}

function plotGap(points) {
  const svg = $("#gap-plot");
  if (points.length < 2) { svg.innerHTML = ""; return; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const y0 = Math.min(0, ...ys), y1 = Math.max(0, ...ys);
  const sx = (x) => 10 + ((x - x0) / (x1 - x0 || 1)) * 300;
  const sy = (y) => 150 - ((y - y0) / (y1 - y0 || 1)) * 140;
  const path = points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
  svg.innerHTML = `<line x1="10" x2="310" y1="${sy(0)}" y2="${sy(0)}" stroke="#bbb"/>` +
    `<path d="${path}" fill="none" stroke="#1a56c4" stroke-width="1.5"/>` +
    `<text x="12" y="14" font-size="11" fill="#555">${y1.toPrecision(3)}</text>` +
    `<text x="12" y="156" font-size="11" fill="#555">${y0.toPrecision(3)}</text>`;
}

async function watch(job) {
  state.learnJob = job.id;
  state.gap = [];
  $("#watch").hidden = false;
  $("#watch-job").textContent = job.id;
  $("#preview").hidden = true;
  let lastPreviewStep = -1;
  const render = async (j) => {
    if (j.id !== state.learnJob) return;
    const status = $("#watch-status");
    status.textContent = j.status;
    status.className = `status ${j.status}`;
    $("#watch-progress").value = j.progress.fraction;
    const text = [`${j.progress.step} / ${j.progress.total} iterations`];
    if (j.eta_seconds != null && j.status === "running") text.push(eta(j.eta_seconds));
    if (j.error) text.push(j.error);
    $("#watch-text").textContent = text.join(" · ");
    if (j.metrics && typeof j.metrics.gap === "number") {
      const last = state.gap[state.gap.length - 1];
      if (!last || last[0] !== j.progress.step) state.gap.push([j.progress.step, j.metrics.gap]);
      plotGap(state.gap);
    }
    if (j.links.preview && j.progress.step !== lastPreviewStep) {
      lastPreviewStep = j.progress.step;
      try {
        $("#preview").src = await imageURL(`${j.links.preview}?step=${j.progress.step}`);
        $("#preview").hidden = false;
      } catch (_) { /* the next event brings a newer preview */ }
    }
    $("#cancel").disabled = ["succeeded", "failed", "canceled"].includes(j.status);
    if (j.status === "failed") showError(`Learning failed: ${j.error || "no reason given"}`);
    if (j.status === "succeeded" && j.model_id) {
      await openModel(j.model_id);
      refreshLists();
    }
  };
  try {
    await render(job);
    await follow(job.id, render);
  } catch (err) {
    showError(err);
  }
}

async function cancelLearning() {
  if (!state.learnJob) return;
  try {
    const job = await api(`/v1/jobs/${state.learnJob}/cancel`, { method: "POST" });
    $("#watch-text").textContent = job.status === "canceled" ? "canceled" : "cancel requested…";
  } catch (err) {
    showError(err);
  }
}

// ---- a model: samples, weights, reconstructions -------------------------------------------------
async function openModel(id) {
  clearError();
  try {
    const m = await api(`/v1/models/${id}`);
    state.model = m;
    $("#model").hidden = false;
    $("#model-id").textContent = m.id;
    $("#model-summary").textContent =
      `${m.kind} model, preset ${m.preset}, ${m.iterations} iterations, ${m.image_size} px` +
      (m.kind === "object" ? " (objects sample at this size only)" : " (textures sample at any size)");
    const names = (m.categories || []).map((c) => c.name);
    if (names.length > 1) $("#model-summary").textContent += `; ${names.length} categories: ${names.join(", ")}`;
    const category = $("#category");
    category.innerHTML = "";
    for (const name of names) {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = name;
      category.append(opt);
    }
    $("#category-field").hidden = names.length < 2; // one category: nothing to choose
    $("#size").value = m.image_size;
    $("#size").disabled = m.kind === "object";
    const weights = $("#weights");
    weights.href = m.links.weights;
    weights.setAttribute("download", `${m.id}.safetensors`);
    $("#gallery").innerHTML = "";
    $("#recon").innerHTML = "";
    $("#inpaint").innerHTML = "";
    $("#inpaint-errors").hidden = true;
    if (m.job_id === state.learnJob && m.learning_curve.length > 1) {
      plotGap(m.learning_curve.map((p) => [p.iteration, p.gap])); // the whole curve, not just the events seen
    }
    $("#model").scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (err) {
    showError(err);
  }
}

async function runJob(job, statusEl) {
  let final = job;
  await follow(job.id, async (j) => {
    final = j;
    statusEl.textContent = `${j.status} ${j.progress.step}/${j.progress.total}`;
  });
  if (final.status !== "succeeded") throw new Error(`job ${final.id} ${final.status}: ${final.error || ""}`);
  return final;
}

function figure(url, caption, download) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = url;
  img.alt = caption;
  const cap = document.createElement("figcaption");
  const a = document.createElement("a");
  a.href = url;
  a.download = download;
  a.textContent = `Download ${caption}`;
  cap.append(a);
  fig.append(img, cap);
  return fig;
}

async function sample(event) {
  event.preventDefault();
  clearError();
  const m = state.model;
  if (!m) return;
  const body = { n: Number($("#n").value || 4), seed: Number($("#seed").value || 0) };
  if ($("#size").value && m.kind !== "object") body.size = Number($("#size").value);
  if ($("#steps").value) body.steps = Number($("#steps").value);
  const several = (m.categories || []).length > 1;
  if (several) body.category = $("#category").value;
  const status = $("#sample-status");
  try {
    const job = await api(`/v1/models/${m.id}/samples`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const done = await runJob(job, status);
    const gallery = $("#gallery");
    gallery.innerHTML = "";
    // with several categories, every caption names the one sampled (the job's result says which)
    const of = several && done.result.category ? `${done.result.category} ` : "";
    const file = of ? `${done.result.category}-` : "";
    for (const [k, path] of done.links.images.entries()) {
      gallery.append(figure(await imageURL(path), `${of}sample ${k + 1}`, `sample-${file}${done.id}-${k}.png`));
    }
    gallery.append(figure(await imageURL(done.links.grid), `${of}grid`, `grid-${file}${done.id}.png`));
    status.textContent = `${done.links.images.length} images` + (of ? ` of category ${done.result.category}` : "");
    refreshLists();
  } catch (err) {
    status.textContent = "";
    showError(err);
  }
}

async function reconstruct(event) {
  event.preventDefault();
  clearError();
  const file = $("#recon-file").files[0];
  if (!state.model) return;
  if (!file) return showError("Choose an image to reconstruct.");
  const status = $("#recon-status");
  try {
    const form = new FormData();
    form.append("image", file, file.name);
    if (!$("#category-field").hidden) form.append("category", $("#category").value); // the Sample form's choice
    const job = await api(`/v1/models/${state.model.id}/reconstructions`, { method: "POST", body: form });
    const done = await runJob(job, status);
    const out = $("#recon");
    out.innerHTML = "";
    out.append(figure(await imageURL(done.links.images[0]), "input", `input-${done.id}.png`));
    const by = $("#category-field").hidden ? "" : ` by the ${done.result.category} model`;
    out.append(figure(await imageURL(done.links.images[1]), `reconstruction${by}`, `reconstruction-${done.id}.png`));
    status.textContent = "done";
  } catch (err) {
    status.textContent = "";
    showError(err);
  }
}

// ---- inpainting: an image, a random drop or a painted mask, and the recovery -----------------------
const mask = { image: null, layer: null, painting: false };

function maskMode() { return document.querySelector("input[name=mask-mode]:checked").value; }

function showMaskEditor() {
  const drawing = maskMode() === "draw";
  $("#mask-editor").hidden = !drawing;
  $("#drop-fraction").disabled = drawing;
  if (drawing) redrawMask();
}

// The mask is kept at the image's own size (white = missing, on black), so that the server fits it
// to the model's size exactly as it fits the image; the visible canvas shows both, scaled.
async function loadMaskImage(file) {
  mask.image = null;
  mask.layer = null;
  if (!file) return redrawMask();
  const img = new Image();
  img.src = URL.createObjectURL(file);
  await img.decode();
  mask.image = img;
  mask.layer = document.createElement("canvas");
  mask.layer.width = img.naturalWidth;
  mask.layer.height = img.naturalHeight;
  clearMask();
}

function clearMask() {
  if (!mask.layer) return;
  const ctx = mask.layer.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, mask.layer.width, mask.layer.height);
  redrawMask();
}

function redrawMask() {
  const canvas = $("#mask-canvas");
  const ctx = canvas.getContext("2d");
  if (!mask.image) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    return;
  }
  canvas.height = Math.round(canvas.width * mask.image.naturalHeight / mask.image.naturalWidth);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(mask.image, 0, 0, canvas.width, canvas.height);
  // the painted (white) pixels of the mask, shown in translucent red over the image
  const tint = document.createElement("canvas");
  tint.width = canvas.width;
  tint.height = canvas.height;
  const t = tint.getContext("2d");
  t.drawImage(mask.layer, 0, 0, tint.width, tint.height);
  const px = t.getImageData(0, 0, tint.width, tint.height);
  for (let i = 0; i < px.data.length; i += 4) {
    const on = px.data[i] >= 128;
    px.data[i] = 230; px.data[i + 1] = 30; px.data[i + 2] = 30; px.data[i + 3] = on ? 160 : 0;
  }
  t.putImageData(px, 0, 0);
  ctx.drawImage(tint, 0, 0);
}

function paintAt(event) {
  if (!mask.layer) return;
  const canvas = $("#mask-canvas");
  const box = canvas.getBoundingClientRect();
  const scale = mask.layer.width / box.width;
  const x = (event.clientX - box.left) * scale, y = (event.clientY - box.top) * scale;
  const width = Math.max(1, Number($("#brush").value) * scale * (box.width / canvas.width));
  const ctx = mask.layer.getContext("2d");
  const from = mask.last || { x, y };
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = width;
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(x, y);
  ctx.stroke();
  mask.last = { x, y };
  redrawMask();
}

function maskCentre() {
  if (!mask.layer) return showError("Choose an image first.");
  const ctx = mask.layer.getContext("2d");
  const w = mask.layer.width, h = mask.layer.height, side = Math.min(w, h) / 2;
  ctx.fillStyle = "#fff";
  ctx.fillRect((w - side) / 2, (h - side) / 2, side, side);
  redrawMask();
}

function maskBlob() {
  return new Promise((resolve) => mask.layer.toBlob(resolve, "image/png"));
}

function errorRow(name, e) {
  const tr = document.createElement("tr");
  for (const text of [name, e.rmse.toFixed(2), e.mae.toFixed(2)]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

async function inpaint(event) {
  event.preventDefault();
  clearError();
  const file = $("#inpaint-file").files[0];
  if (!state.model) return;
  if (!file) return showError("Choose an image to recover.");
  const status = $("#inpaint-status");
  try {
    const form = new FormData();
    form.append("image", file, file.name);
    if (maskMode() === "draw") {
      if (!mask.layer) await loadMaskImage(file);
      form.append("mask", await maskBlob(), "mask.png");
    } else {
      form.append("drop", $("#drop-fraction").value || "0.5");
    }
    form.append("noise", $("#inpaint-noise").checked ? "true" : "false");
    form.append("seed", $("#inpaint-seed").value || "0");
    if (!$("#category-field").hidden) form.append("category", $("#category").value); // the Sample form's choice
    if ($("#inpaint-steps").value) form.append("steps", $("#inpaint-steps").value);
    const job = await api(`/v1/models/${state.model.id}/inpaintings`, { method: "POST", body: form });
    const done = await runJob(job, status);
    const out = $("#inpaint");
    out.innerHTML = "";
    for (const [k, name] of done.result.order.entries()) {
      out.append(figure(await imageURL(done.links.images[k]), name, `${name}-${done.id}.png`));
    }
    const e = done.result.errors;
    const body = $("#inpaint-errors tbody");
    body.innerHTML = "";
    body.append(errorRow("model (Langevin)", e), errorRow("blur of the known pixels", e.baselines.blur),
                errorRow("mean colour", e.baselines.mean));
    $("#inpaint-errors").hidden = false;
    const by = $("#category-field").hidden ? "" : ` by the ${done.result.category} model`;
    status.textContent = `done: ${(100 * done.result.missing_fraction).toFixed(0)} % of the pixels recovered${by}`;
    refreshLists();
  } catch (err) {
    status.textContent = "";
    showError(err);
  }
}

// A plain link cannot send the API key: fetch the weights as a blob, then let the link save it.
async function downloadWeights(event) {
  event.preventDefault();
  clearError();
  try {
    const response = await fetch(state.model.links.weights, { headers: headers() });
    if (!response.ok) throw new Error(`could not download the weights [HTTP ${response.status}]`);
    const url = URL.createObjectURL(await response.blob());
    const saver = document.createElement("a");
    saver.href = url;
    saver.download = `${state.model.id}.safetensors`;
    document.body.append(saver);
    saver.click();
    saver.remove();
  } catch (err) {
    showError(err);
  }
}

// ---- lists ----------------------------------------------------------------------------------------
async function refreshLists() {
  try {
    const [models, jobs] = await Promise.all([api("/v1/models?limit=20"), api("/v1/jobs?limit=20")]);
    const ml = $("#models");
    ml.innerHTML = "";
    for (const m of models.items) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `Open ${m.id.slice(0, 8)}`;
      b.addEventListener("click", () => openModel(m.id));
      const cats = (m.categories || []).length > 1 ? ` · ${m.categories.map((c) => c.name).join(", ")}` : "";
      li.append(b, ` ${m.kind} · ${m.preset} · ${m.image_size} px${cats}`);
      ml.append(li);
    }
    if (!models.items.length) ml.innerHTML = "<li>No models yet.</li>";
    const jl = $("#jobs");
    jl.innerHTML = "";
    for (const j of jobs.items) {
      const li = document.createElement("li");
      const s = document.createElement("span");
      s.className = `status ${j.status}`;
      s.textContent = j.status;
      li.append(`${j.kind} ${j.id.slice(0, 8)} `, s, ` ${j.progress.step}/${j.progress.total}`);
      if (j.error) li.append(` — ${j.error}`);
      jl.append(li);
    }
    if (!jobs.items.length) jl.innerHTML = "<li>No jobs yet.</li>";
  } catch (err) {
    showError(err);
  }
}

// ---- wiring --------------------------------------------------------------------------------------
function init() {
  const key = $("#api-key");
  key.value = localStorage.getItem("gcn-api-key") || "";
  key.addEventListener("change", () => {
    if (key.value) localStorage.setItem("gcn-api-key", key.value);
    else localStorage.removeItem("gcn-api-key");
    loadPresets().then(refreshLists).catch(showError);
  });
  const drop = $("#drop");
  drop.addEventListener("click", (e) => { if (e.target === drop || e.target.id === "drop-help") $("#files").click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#files").click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); setFiles(e.dataTransfer.files); });
  $("#files").addEventListener("change", (e) => setFiles(e.target.files));
  $("#preset").addEventListener("change", describePreset);
  for (const r of document.querySelectorAll("input[name=kind]")) r.addEventListener("change", () => pickPresetForKind(r.value));
  $("#learn-form").addEventListener("submit", startLearning);
  $("#cancel").addEventListener("click", cancelLearning);
  $("#sample-form").addEventListener("submit", sample);
  $("#recon-form").addEventListener("submit", reconstruct);
  $("#inpaint-form").addEventListener("submit", inpaint);
  $("#add-category").addEventListener("click", () => addCategoryRow().querySelector(".cat-name").focus());
  addCategoryRow();
  addCategoryRow();
  for (const r of document.querySelectorAll("input[name=mask-mode]")) r.addEventListener("change", showMaskEditor);
  $("#inpaint-file").addEventListener("change", (e) => loadMaskImage(e.target.files[0]).catch(showError));
  const canvas = $("#mask-canvas");
  canvas.addEventListener("pointerdown", (e) => { mask.painting = true; mask.last = null; canvas.setPointerCapture(e.pointerId); paintAt(e); });
  canvas.addEventListener("pointermove", (e) => { if (mask.painting) paintAt(e); });
  canvas.addEventListener("pointerup", () => { mask.painting = false; mask.last = null; });
  $("#mask-centre").addEventListener("click", maskCentre);
  $("#mask-clear").addEventListener("click", clearMask);
  $("#refresh").addEventListener("click", refreshLists);
  $("#weights").addEventListener("click", downloadWeights);
  loadPresets().then(refreshLists).catch(showError);
}

init();
