// clipdex page: plain JS, no build step, no network beyond this server.
"use strict";

const PAGE = 40;
const $ = (id) => document.getElementById(id);
const els = {
  form: $("search-form"), q: $("q"), file: $("image-input"), grid: $("grid"), status: $("status"),
  more: $("more"), viewer: $("viewer"), footer: $("footer"), drop: $("drop"), fresh: $("fresh"),
  queryView: $("query-view"), queryImg: $("query-img"), queryLabel: $("query-label"),
};
// The current query: {kind: "text", q} | {kind: "image", file} | {kind: "similar", id, label}
let query = null;
let target = "images";
// Filters of text and image queries (the API's `not`, `under`, `words`, `after`, `before`, `min_score`, `captioned`)
const NO_FILTERS = { not: [], under: [], words: [], after: "", before: "", min_score: "", captioned: "", media: "" };
let filters = { ...NO_FILTERS };
let results = [];
let total = 0;
let current = -1; // index of the hit open in the viewer
let generation = 0; // drops answers to superseded queries

// ---- API ------------------------------------------------------------------------------------
// A request with the session cookie: a 401 asks for the token and retries; a failure throws the
// server's error message (or the status line). Returns the Response.
async function request(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  if (response.status === 401 && !url.endsWith("/api/login")) {
    await login();
    return request(url, options);
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return response;
}

// `request`, answered with its JSON body (null when the body is not JSON).
async function api(url, options = {}) {
  const response = await request(url, options);
  try { return await response.json(); } catch { return null; }
}

let loginPending = null;
function login() {
  // One dialog for all requests that met a 401; the server then sets an HttpOnly cookie.
  if (loginPending) return loginPending;
  loginPending = new Promise((resolve) => {
    const dialog = $("login");
    const form = $("login-form");
    const error = $("login-error");
    error.textContent = "";
    form.onsubmit = async (event) => {
      event.preventDefault();
      const response = await fetch("/api/login", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("token").value }),
      });
      if (response.ok) {
        dialog.close();
        loginPending = null;
        resolve();
      } else {
        error.textContent = "Wrong token, try again.";
      }
    };
    dialog.showModal();
    $("token").focus();
  });
  return loginPending;
}

// ---- filters ------------------------------------------------------------------------------------
const fields = {
  not: $("f-not"), under: $("f-under"), words: $("f-words"), after: $("f-after"), before: $("f-before"),
  min_score: $("f-min-score"), captioned: $("f-captioned"), media: $("f-media"),
};
const split = (text, sep) => text.split(sep).map((t) => t.trim()).filter(Boolean);

function readFilters() {
  return {
    not: split(fields.not.value, ","), under: split(fields.under.value, ";"), words: split(fields.words.value, ","),
    after: fields.after.value, before: fields.before.value,
    min_score: fields.min_score.value.trim(), captioned: fields.captioned.value, media: fields.media.value,
  };
}

function showFilters() {
  fields.not.value = filters.not.join(", ");
  fields.under.value = filters.under.join("; ");
  fields.words.value = filters.words.join(", ");
  for (const name of ["after", "before", "min_score", "captioned", "media"]) fields[name].value = filters[name];
  const active = Object.values(filters).filter((v) => v.length).length;
  $("filter-count").textContent = active ? ` (${active})` : "";
  if (active) $("filters").open = true;
}

// Append the filters to URLSearchParams or FormData (both have `append`).
function addFilters(params) {
  for (const name of ["not", "under", "words"]) for (const v of filters[name]) params.append(name, v);
  for (const name of ["after", "before", "min_score", "captioned", "media"]) if (filters[name]) params.append(name, filters[name]);
  return params;
}

function filtersFrom(params) {
  const date = (v) => (/^\d{4}-\d{2}-\d{2}$/.test(v || "") ? v : "");
  return {
    not: params.getAll("not").filter(Boolean), under: params.getAll("under").filter(Boolean),
    words: params.getAll("words").filter(Boolean),
    after: date(params.get("after")), before: date(params.get("before")),
    min_score: Number.isFinite(parseFloat(params.get("min_score"))) ? params.get("min_score") : "",
    captioned: ["true", "false"].includes(params.get("captioned")) ? params.get("captioned") : "",
    media: ["photos", "videos"].includes(params.get("media")) ? params.get("media") : "",
  };
}

// ---- URL <-> query --------------------------------------------------------------------------
function urlFor(q) {
  const params = new URLSearchParams();
  if (q && q.kind === "text") params.set("q", q.q);
  if (q && q.kind === "similar") params.set("similar", q.id);
  else addFilters(params);
  if (target !== "images") params.set("target", target);
  const s = params.toString();
  return s ? `/?${s}` : "/";
}

function fromUrl() {
  const params = new URLSearchParams(location.search);
  target = params.get("target") === "texts" ? "texts" : "images";
  document.querySelector(`input[name=target][value=${target}]`).checked = true;
  filters = filtersFrom(params);
  showFilters();
  // Words alone are a query too: the server ranks the pictures holding them.
  if (params.get("q") || filters.words.length) return { kind: "text", q: params.get("q") || "" };
  if (/^\d+$/.test(params.get("similar") || "")) return { kind: "similar", id: params.get("similar") };
  return null;
}

function go(q, push = true) {
  query = q;
  if (push) {
    const url = urlFor(q);
    if (url !== location.pathname + location.search) history.pushState(null, "", url);
  }
  els.q.value = q && q.kind === "text" ? q.q : "";
  showQuery();
  run(false);
}

function showQuery() {
  const image = query && query.kind === "image";
  const similar = query && query.kind === "similar";
  els.queryView.hidden = !(image || similar);
  els.queryImg.hidden = false;
  els.queryImg.onerror = () => { els.queryImg.hidden = true; }; // e.g. "similar" of a text item
  if (image) {
    els.queryImg.src = URL.createObjectURL(query.file);
    els.queryLabel.textContent = `Images like ${query.file.name || "the pasted image"}`;
  } else if (similar) {
    els.queryImg.src = `/api/items/${query.id}/thumbnail`;
    els.queryLabel.textContent = `More like item ${query.id}`;
  }
}

// ---- searching ------------------------------------------------------------------------------
async function run(append) {
  const mine = ++generation;
  if (!append) { results = []; total = 0; els.grid.replaceChildren(); }
  if (!query) { status("Type what you are looking for, or drop, paste or pick an image."); els.more.hidden = true; return; }
  status(append ? "Loading more…" : "Searching…", "busy");
  els.grid.setAttribute("aria-busy", "true");
  const offset = results.length;
  try {
    let body;
    if (query.kind === "text") {
      const params = addFilters(new URLSearchParams({ q: query.q, k: PAGE, offset, target }));
      body = await api(`/api/search?${params}`);
    } else if (query.kind === "image") {
      const form = new FormData();
      form.append("image", query.file);
      form.append("k", PAGE);
      form.append("offset", offset);
      form.append("target", target);
      addFilters(form);
      body = await api("/api/search", { method: "POST", body: form });
    } else {
      body = await api(`/api/items/${query.id}/similar?k=${Math.min(1000, offset + PAGE)}`);
      body.results = body.results.slice(offset);
    }
    if (mine !== generation) return;
    total = body.total;
    const start = results.length;
    results = results.concat(body.results);
    body.results.forEach((r, n) => els.grid.append(card(r, start + n)));
    const took = `${body.took_ms.toFixed(0)} ms`;
    status(results.length ? `${results.length} of ${total} shown · ${took}` : "No results.");
    els.more.hidden = results.length >= total || results.length >= 1000 || body.results.length === 0;
  } catch (error) {
    if (mine === generation) { status(`Error: ${error.message}`, "error"); els.more.hidden = true; }
  } finally {
    if (mine === generation) els.grid.removeAttribute("aria-busy");
  }
}

function status(text, kind = "") {
  els.status.textContent = text;
  els.status.className = kind;
  els.status.setAttribute("role", kind === "error" ? "alert" : "status");
}

function basename(path) { return path ? path.split("/").pop() : ""; }

// Seconds as m:ss (h:mm:ss from an hour up), as the CLI's table shows a video's moment.
function clock(t) {
  const s = Math.floor(t || 0);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

function card(r, index) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = `hit ${r.modality}`;
  button.dataset.index = index;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = r.score.toFixed(3);
  score.title = "cosine similarity";
  if (r.modality === "image" || r.modality === "video") {
    const img = document.createElement("img");
    img.src = r.thumbnail;
    img.alt = basename(r.path);
    img.loading = "lazy";
    img.width = 256;
    img.height = 256;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = basename(r.path);
    button.append(img, name);
    const at = r.modality === "video" ? ` at ${clock(r.t)}` : "";
    button.setAttribute("aria-label", `${basename(r.path)}${at}, rank ${r.rank}, score ${r.score.toFixed(3)}`);
    if (r.modality === "video") {  // a play badge with the moment's time
      const badge = document.createElement("span");
      badge.className = "play";
      badge.textContent = `▶ ${clock(r.t)}`;
      badge.title = `video, from ${clock(r.t)} to ${clock(r.t_end)}`;
      button.append(badge);
    }
  } else {
    const quote = document.createElement("span");
    quote.className = "quote";
    quote.textContent = r.text;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.path ? basename(r.path) : "(free text)";
    button.append(quote, name);
    button.setAttribute("aria-label", `text: ${r.text}, rank ${r.rank}, score ${r.score.toFixed(3)}`);
  }
  button.append(score);
  button.addEventListener("click", () => openHit(index));
  li.append(button);
  return li;
}

// ---- the large view -------------------------------------------------------------------------
// The words to highlight in the text read in a picture: the words filter's and the query's.
function matchTerms() {
  const split = (text) => text.replace(/"|\*|\b(AND|OR|NOT|NEAR)\b|\w+:/g, " ").split(/\s+/).filter(Boolean);
  // The query's short Latin words ("a", "of") would light up half of every line: left out.
  const asked = query && query.kind === "text" ? split(query.q).filter((t) => t.length >= 3 || /[^\x00-\x7f]/.test(t)) : [];
  return [...new Set(split(filters.words.join(" ")).concat(asked).map((t) => t.toLowerCase()))];
}

// Lines with the matched words marked, and each line's box drawn over the picture.
function showTextRead(lines) {
  const terms = matchTerms();
  $("ocr-title").hidden = lines.length === 0;
  const svg = $("ocr-boxes");
  for (const line of lines) {
    const li = document.createElement("li");
    const lower = line.text.toLowerCase();
    let at = 0;
    let matched = false;
    while (at < line.text.length) {  // the earliest match of any term from here, marked
      let best = null;
      for (const t of terms) {
        const i = lower.indexOf(t, at);
        if (i >= 0 && (best === null || i < best[0])) best = [i, t.length];
      }
      if (best === null) break;
      li.append(line.text.slice(at, best[0]));
      const mark = document.createElement("mark");
      mark.textContent = line.text.slice(best[0], best[0] + best[1]);
      li.append(mark);
      matched = true;
      at = best[0] + best[1];
    }
    li.append(line.text.slice(at));
    $("viewer-ocr").append(li);
    const polygon = document.createElementNS("http://www.w3.org/2000/svg", "polygon");
    polygon.setAttribute("points", line.box.map(([x, y]) => `${x},${y}`).join(" "));
    if (matched) polygon.classList.add("match");
    svg.append(polygon);
  }
}

async function openHit(index) {
  if (index < 0 || index >= results.length) return;
  current = index;
  const r = results[index];
  const viewer = els.viewer;
  $("viewer-title").textContent = r.modality === "text" ? r.text : basename(r.path);
  $("viewer-meta").replaceChildren();
  $("viewer-captions").replaceChildren();
  $("viewer-ocr").replaceChildren();
  $("ocr-boxes").replaceChildren();
  $("ocr-title").hidden = true;
  $("viewer-img").removeAttribute("src");
  $("viewer-img").hidden = false;
  stopVideo();
  showExplain(false);
  $("explain-btn").dataset.id = ""; // set again once the item is known (the button keeps any focus)
  if (!viewer.open) viewer.showModal();
  try {
    const item = await api(`/api/items/${r.id}`);
    if (current !== index) return;
    if (item.modality === "video") return showVideo(item, r);
    const imageId = item.modality === "image" ? item.id : item.image_id;
    const img = $("viewer-img");
    if (imageId != null) {
      img.src = `/api/items/${imageId}/file`;
      img.onerror = () => { img.onerror = null; img.src = `/api/items/${imageId}/thumbnail`; };
      img.alt = item.path ? `The image ${basename(item.path)}` : "The image";
    }
    const link = $("original-link");
    link.hidden = imageId == null;
    if (imageId != null) link.href = `/api/items/${imageId}/file`;
    const meta = [["Path", item.path || "—"], ["Score", r.score.toFixed(4)], ["Id", item.id]];
    if (item.width) meta.push(["Size", `${item.width} × ${item.height} px`]);
    if (item.size != null) meta.push(["File", formatBytes(item.size)]);
    if (item.mtime != null) meta.push(["Modified", new Date(item.mtime * 1000).toLocaleString()]);
    for (const [k, v] of meta) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      $("viewer-meta").append(dt, dd);
    }
    const captions = item.captions || [];
    $("captions-title").hidden = captions.length === 0;
    for (const c of captions) {
      const li = document.createElement("li"); li.textContent = c.text;
      $("viewer-captions").append(li);
    }
    showTextRead(item.lines || []);
    $("similar-btn").dataset.id = item.id;
    // The heat map needs an image and a text to explain: the current text query.
    const explain = $("explain-btn");
    explain.hidden = imageId == null || !(query && query.kind === "text");
    explain.dataset.id = imageId;
    explain.dataset.name = basename(item.path);
  } catch (error) {
    $("viewer-title").textContent = `Error: ${error.message}`;
  }
}

// A video's moment: the video plays from t; the span [t, t_end) is marked under it.
function stopVideo() {
  const video = $("viewer-video");
  video.pause();
  video.removeAttribute("src");
  video.load();
  video.hidden = true;
  $("video-span").hidden = true;
  $("video-track").hidden = true;  // a picture's boxes overlay exactly the picture
}

function showVideo(item, r) {
  const video = $("viewer-video");
  $("viewer-img").hidden = true;
  video.hidden = false;
  $("video-track").hidden = false;
  video.poster = item.thumbnail;
  // The media fragment starts the video at t (the server answers the Range requests it makes).
  video.src = `${item.file}#t=${item.t}`;
  video.addEventListener("loadedmetadata", () => {
    if (Math.abs(video.currentTime - item.t) > 0.5) video.currentTime = item.t;
    const span = $("video-span");
    const length = video.duration || item.t_end || 1;
    span.hidden = false;
    span.style.left = `${(100 * item.t) / length}%`;
    span.style.width = `${(100 * Math.max(item.t_end - item.t, 0)) / length}%`;
  }, { once: true });
  const link = $("original-link");
  link.hidden = false;
  link.href = item.file;
  const meta = [["Path", item.path || "—"], ["Moment", `${clock(item.t)} – ${clock(item.t_end)}`],
    ["Score", r.score.toFixed(4)], ["Id", item.id]];
  if (item.size != null) meta.push(["File", formatBytes(item.size)]);
  for (const [k, v] of meta) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    $("viewer-meta").append(dt, dd);
  }
  $("captions-title").hidden = true;
  $("similar-btn").dataset.id = item.id;
  $("explain-btn").hidden = true;
}

// Explain: the heat map of the regions that raise the match with the text query, in place of the image.
let explained = null; // the object URL shown, revoked when replaced
async function showExplain(on) {
  const button = $("explain-btn");
  const img = $("explain-img");
  const caption = $("explain-caption");
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Show original" : "Explain";
  $("viewer-img").hidden = on;
  img.hidden = !on;
  caption.hidden = !on;
  if (!on) {
    img.removeAttribute("src");
    if (explained) { URL.revokeObjectURL(explained); explained = null; }
    return;
  }
  const id = button.dataset.id;
  if (!id || !query || query.kind !== "text") return showExplain(false);
  const text = query.q;
  const asked = current;
  caption.textContent = "Explaining… (about a hundred passes through the model)";
  try {
    const response = await request(`/api/items/${id}/explain?${new URLSearchParams({ q: text })}`);
    const blob = await response.blob();
    if (current !== asked || button.getAttribute("aria-pressed") !== "true") return;
    if (explained) URL.revokeObjectURL(explained);
    explained = URL.createObjectURL(blob);
    img.src = explained;
    img.alt = `Heat map over ${button.dataset.name || "the image"}: brighter regions raise its match with “${text}”`;
    const score = parseFloat(response.headers.get("X-Clipdex-Score"));
    caption.textContent = `Regions that raise the match with “${text}” (score ${score.toFixed(4)}); uncoloured ones don't.`;
  } catch (error) {
    if (current === asked) caption.textContent = `Error: ${error.message}`;
  }
}

function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// ---- events ---------------------------------------------------------------------------------
els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = els.q.value.trim();
  filters = readFilters();
  showFilters();
  const image = query && query.kind === "image" ? query : null;
  go(q || (!image && filters.words.length) ? { kind: "text", q } : image);
});
document.querySelectorAll("input[name=target]").forEach((radio) => radio.addEventListener("change", () => {
  target = radio.value;
  go(query && query.kind === "similar" ? null : query, query && query.kind !== "image");
}));
els.file.addEventListener("change", () => {
  if (els.file.files.length) go({ kind: "image", file: els.file.files[0] }, true);
  els.file.value = "";
});
els.more.addEventListener("click", () => run(true));
$("clear-query").addEventListener("click", () => go(null));
$("clear-filters").addEventListener("click", () => {
  filters = { ...NO_FILTERS };
  showFilters();
  go(query && query.kind !== "similar" ? query : null, !(query && query.kind === "image"));
});
$("explain-btn").addEventListener("click", () => showExplain($("explain-btn").getAttribute("aria-pressed") !== "true"));
$("close-viewer").addEventListener("click", () => els.viewer.close());
els.viewer.addEventListener("click", (event) => { if (event.target === els.viewer) els.viewer.close(); });
els.viewer.addEventListener("close", () => {
  showExplain(false);
  stopVideo();
  const hit = els.grid.querySelector(`[data-index="${current}"]`);
  if (hit) hit.focus();
});
$("similar-btn").addEventListener("click", () => {
  const id = $("similar-btn").dataset.id;
  els.viewer.close();
  go({ kind: "similar", id });
});
window.addEventListener("popstate", () => go(fromUrl(), false));

document.addEventListener("keydown", (event) => {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
  if (event.key === "/" && !typing && !els.viewer.open) {
    event.preventDefault();
    els.q.focus();
    els.q.select();
    return;
  }
  if (els.viewer.open && (event.key === "ArrowRight" || event.key === "ArrowLeft")) {
    event.preventDefault();
    openHit(current + (event.key === "ArrowRight" ? 1 : -1));
    return;
  }
  const hit = document.activeElement.closest && document.activeElement.closest(".hit");
  if (!hit && !typing && event.key.startsWith("Arrow") && results.length) {
    event.preventDefault();
    els.grid.querySelector(".hit").focus();
    return;
  }
  if (!hit || !event.key.startsWith("Arrow")) return;
  event.preventDefault();
  const index = Number(hit.dataset.index);
  const columns = getComputedStyle(els.grid).gridTemplateColumns.split(" ").length;
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
  const next = els.grid.querySelector(`[data-index="${index + step}"]`);
  if (next) next.focus();
  else if (event.key === "ArrowUp") els.q.focus();
});

// Drag and drop, paste: an image becomes the query.
let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  if ([...event.dataTransfer.types].includes("Files")) { dragDepth += 1; els.drop.hidden = false; }
});
document.addEventListener("dragleave", () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) els.drop.hidden = true; });
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  els.drop.hidden = true;
  const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
  if (file) go({ kind: "image", file });
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
  if (file) { event.preventDefault(); go({ kind: "image", file }); }
});

async function footer() {
  try {
    const info = await api("/api/info");
    const model = info.model ? info.model.split("/").pop() : "no model yet";
    els.footer.textContent = `Model: ${model} · ${info.images} images · ${info.texts} texts`;
    return info;
  } catch (error) {
    els.footer.textContent = `Library info unavailable: ${error.message}`;
    return null;
  }
}

// ---- serve --watch: a quiet notice when pictures arrive --------------------------------------
// A cheap poll of /api/info's generation while the page is visible; clicking the notice reloads
// the results (the new pictures rank where they belong).
const POLL_MS = 10000;
let seen = null; // {generation, images} the results on screen were loaded at

async function poll() {
  if (document.hidden) return;
  try {
    const info = await api("/api/info");
    if (info.generation === seen.generation) return;
    const fresh = info.images - seen.images;
    if (fresh > 0) {
      els.fresh.textContent = fresh === 1 ? "1 new picture" : `${fresh} new pictures`;
      els.fresh.hidden = false;
    }
  } catch (error) { /* a restarting server: try again at the next poll */ }
}

els.fresh.addEventListener("click", async () => {
  els.fresh.hidden = true;
  const info = await footer();
  if (info) seen = { generation: info.generation, images: info.images };
  if (query) run(false);
});

go(fromUrl(), false);
footer().then((info) => {
  if (!info || !info.watching || !info.watching.length) return;
  seen = { generation: info.generation, images: info.images };
  setInterval(poll, POLL_MS);
});
