// The sonovec explorer: a map of a collection over the /v1 API. Every call sends the key the user
// gave (asked for when /v1/models answers 401); nothing is fetched from anywhere but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const NEIGHBOURS = 5;
const UPLOADED = "(uploaded)";

const explorer = {
  key: sessionStorage.getItem("sonovec-key") || "",
  collection: null,
  map: null,        // the /map response
  clusters: null,   // id -> cluster id, when coloured by cluster
  uploaded: null,   // {x, y, name, hits}: the last uploaded recording, placed on the map
  selected: null,
  blobUrl: null,
};
window.explorer = explorer;

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers() {
  return explorer.key ? { Authorization: `Bearer ${explorer.key}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    showKeyBox("the key was refused");
    throw new ApiError(401, null);
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();
const status = (text) => { $("status").textContent = text; };
const enc = encodeURIComponent;

function showKeyBox(error) {
  $("keybox").hidden = false;
  $("key-error").textContent = explorer.key ? error : "";
}

// ---- start: the key, the models (banner), the collections ----

async function start() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (response.status === 401) {
    showKeyBox("the key was refused");
    return;
  }
  $("keybox").hidden = true;
  const models = await response.json();
  const random = (models.models || []).filter((m) => !m.pretrained);
  if (random.length) {
    $("banner").hidden = false;
    $("banner").textContent = "Not pretrained weights: " + random.map((m) =>
      `${m.name} (${m.weights_source}${m.warning ? ": " + m.warning : ""})`).join("; ") +
      ". The map shows random-init (or fake) embeddings: it carries little meaning.";
  }
  const listed = await json("/v1/collections");
  const select = $("collection");
  select.innerHTML = "";
  for (const c of listed.collections) {
    select.add(new Option(`${c.name} (${c.count})`, c.name));
  }
  const fromPath = decodeURIComponent(location.pathname.replace(/^\/explore\/?/, ""));
  explorer.collection = fromPath || (listed.collections[0] && listed.collections[0].name) || null;
  if (!explorer.collection) {
    status("no collections on this server yet");
    return;
  }
  select.value = explorer.collection;
  await draw();
}

// ---- the map ----

async function draw() {
  const c = explorer.collection;
  const params = new URLSearchParams({
    method: $("method").value, perplexity: $("perplexity").value, n_neighbors: $("n-neighbors").value,
    seed: $("seed").value,
  });
  status(`computing the ${$("method").value} map of ${c}...`);
  try {
    explorer.map = await json(`/v1/collections/${enc(c)}/map?${params}`);
  } catch (e) {
    status(`map: ${e.message}`);
    Plotly.purge("map");
    return;
  }
  explorer.clusters = null;
  $("clusters-summary").textContent = "";
  if ($("colour").value === "cluster") {
    await loadClusters();
  }
  fillLabelFilter();
  const m = explorer.map;
  status(`${m.points.length} of ${m.total} items, ${m.method} ${JSON.stringify(m.params)}` +
    `${m.cached ? " (cached)" : ` in ${m.seconds.toFixed(2)} s`}; audio kept: ${m.keep_audio}`);
  plot();
}

async function loadClusters() {
  const c = explorer.collection;
  const params = new URLSearchParams({ method: "kmeans", k: $("clusters-k").value, seed: $("seed").value });
  const result = await json(`/v1/collections/${enc(c)}/clusters?${params}`);
  explorer.clusters = new Map(result.ids.map((id, i) => [id, result.assignments[i]]));
  const purity = result.purity === null ? "no labels" : `label purity ${(100 * result.purity).toFixed(0)} %`;
  $("clusters-summary").textContent = `${result.clusters.length} clusters (k-means on the embeddings), ` +
    `${purity}: ` + result.clusters.map((k) =>
      `#${k.id} ${k.size}${k.label ? ` ${k.label} ${(100 * k.purity).toFixed(0)}%` : ""}`).join(", ");
}

function fillLabelFilter() {
  const select = $("label-filter");
  const current = select.value;
  const labels = new Set();
  for (const p of explorer.map.points) p.labels.forEach((l) => labels.add(l));
  select.innerHTML = "";
  select.add(new Option("all", ""));
  for (const l of [...labels].sort()) select.add(new Option(l, l));
  select.value = labels.has(current) ? current : "";
}

function groupOf(point) {
  if (explorer.clusters) return `cluster ${explorer.clusters.get(point.id)}`;
  return point.labels.length ? point.labels[0] : "(no label)";
}

function hoverText(p) {
  const meta = Object.keys(p.metadata).length ? `<br>${JSON.stringify(p.metadata)}` : "";
  return `<b>${p.id}</b><br>labels: ${p.labels.join(", ") || "none"}${meta}` +
    (p.has_audio ? "" : "<br>(no audio kept)");
}

function plot() {
  const filter = $("label-filter").value;
  const groups = new Map();
  for (const p of explorer.map.points) {
    if (filter && !p.labels.includes(filter)) continue;
    const g = groupOf(p);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(p);
  }
  const traces = [...groups.entries()].sort().map(([name, points]) => ({
    type: "scatter", mode: "markers", name,
    x: points.map((p) => p.x), y: points.map((p) => p.y),
    customdata: points.map((p) => p.id), text: points.map(hoverText), hoverinfo: "text",
    marker: { size: 9, line: { width: 0.5, color: "#333" } },
  }));
  const u = explorer.uploaded;
  if (u) {
    traces.push({
      type: "scatter", mode: "markers", name: UPLOADED, x: [u.x], y: [u.y], customdata: [UPLOADED],
      text: [`<b>${u.name}</b><br>uploaded; placed at the score-weighted mean of its ${u.hits.length} nearest items`],
      hoverinfo: "text", marker: { size: 16, symbol: "star", color: "black" },
    });
  }
  const layout = {
    margin: { l: 30, r: 10, t: 30, b: 30 }, hovermode: "closest", legend: { itemsizing: "constant" },
    title: { text: `${explorer.collection}: ${explorer.map.method}`, font: { size: 14 } },
    xaxis: { zeroline: false }, yaxis: { zeroline: false },
  };
  Plotly.react("map", traces, layout, { displaylogo: false, responsive: true });
  const div = $("map");
  if (!div.dataset.bound) {
    div.on("plotly_click", (event) => {
      const id = event.points[0].customdata;
      if (id !== UPLOADED) select(id);
    });
    div.dataset.bound = "1";
  }
}

// ---- one item: play it, its neighbours, its self-similarity ----

function pointById(id) {
  return explorer.map.points.find((p) => p.id === id);
}

async function select(id) {
  const p = pointById(id);
  explorer.selected = id;
  status(`${id}: ${p.has_audio ? "playing" : "nothing to play"}; its nearest items are listed`);
  $("selected").textContent = `${id} — labels: ${p.labels.join(", ") || "none"}` +
    (Object.keys(p.metadata).length ? ` — ${JSON.stringify(p.metadata)}` : "");
  const audio = await play(id);
  await neighbours(id);
  if (audio) await selfSimilarity(audio);
  else Plotly.purge("selfsim");
}

async function play(id) {
  const player = $("player");
  const p = pointById(id);
  const url = `/v1/collections/${enc(explorer.collection)}/items/${enc(id)}/audio`;
  player.dataset.src = url;
  player.dataset.item = id;
  if (!p || !p.has_audio) {
    player.removeAttribute("src");
    player.load();
    $("no-audio").hidden = false;
    $("no-audio").textContent = explorer.map.keep_audio === "none"
      ? "This collection keeps no audio (created with keep_audio=none): nothing to play."
      : "This item was added by vector: it has no recording to play.";
    return null;
  }
  $("no-audio").hidden = true;
  const blob = await (await api(url)).blob();
  if (explorer.blobUrl) URL.revokeObjectURL(explorer.blobUrl);
  // With keys on, <audio src> cannot send the header: play the fetched bytes from a blob URL.
  explorer.blobUrl = explorer.key ? URL.createObjectURL(blob) : null;
  player.src = explorer.blobUrl || url;
  try { await player.play(); } catch (e) { status(`playback: ${e.message}`); }
  return blob;
}

async function neighbours(id) {
  const list = $("neighbours");
  list.innerHTML = "";
  const result = await json(`/v1/collections/${enc(explorer.collection)}/search`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id, k: NEIGHBOURS }),
  });
  showHits(result.hits);
}

function showHits(hits) {
  const list = $("neighbours");
  list.innerHTML = "";
  for (const hit of hits) {
    const li = document.createElement("li");
    li.dataset.id = hit.id;
    li.dataset.score = hit.score;
    li.textContent = `${hit.id} (${hit.labels.join(", ") || "no label"}) ${hit.score.toFixed(3)}`;
    const p = pointById(hit.id);
    if (p && p.has_audio) {
      const button = document.createElement("button");
      button.textContent = "play";
      button.onclick = () => play(hit.id);
      li.appendChild(button);
    }
    list.appendChild(li);
  }
}

async function selfSimilarity(blob) {
  const form = new FormData();
  form.append("audio", blob, "item.wav");
  try {
    const result = await json("/v1/similarity/self", { method: "POST", body: form });
    const t = result.segment_starts_s;
    Plotly.react("selfsim", [{ type: "heatmap", z: result.matrix, x: t, y: t, zmin: -1, zmax: 1,
      colorscale: "Viridis" }], { margin: { l: 40, r: 10, t: 10, b: 30 }, yaxis: { autorange: "reversed" } },
    { displaylogo: false });
  } catch (e) {
    $("selfsim").textContent = `self-similarity: ${e.message}`;
  }
}

// ---- search by recording: the upload appears on the map ----

async function upload(file) {
  const form = new FormData();
  form.append("audio", file, file.name);
  form.append("k", String(NEIGHBOURS));
  status(`searching with ${file.name}...`);
  let result;
  try {
    result = await json(`/v1/collections/${enc(explorer.collection)}/search`, { method: "POST", body: form });
  } catch (e) {
    status(`search: ${e.message}`);
    return;
  }
  // Placement: the score-weighted mean of the map positions of its nearest items (not a
  // re-fit of the map: the other points stay where they are).
  const placed = result.hits.map((h) => [pointById(h.id), Math.max(h.score, 0) + 1e-6]).filter(([p]) => p);
  const total = placed.reduce((s, [, w]) => s + w, 0);
  explorer.uploaded = {
    name: file.name, hits: result.hits,
    x: placed.reduce((s, [p, w]) => s + p.x * w, 0) / total,
    y: placed.reduce((s, [p, w]) => s + p.y * w, 0) / total,
  };
  $("selected").textContent = `${file.name} (uploaded)`;
  $("no-audio").hidden = true;
  Plotly.purge("selfsim");
  showHits(result.hits);
  status(`${file.name}: placed among its ${result.hits.length} nearest items`);
  plot();
}

// ---- controls ----

$("key-save").onclick = () => {
  explorer.key = $("key").value.trim();
  sessionStorage.setItem("sonovec-key", explorer.key);
  start();
};
$("collection").onchange = () => {
  explorer.collection = $("collection").value;
  explorer.uploaded = null;
  history.replaceState(null, "", `/explore/${enc(explorer.collection)}`);
  draw();
};
$("redraw").onclick = draw;
$("method").onchange = draw;
$("colour").onchange = draw;
$("label-filter").onchange = plot;
$("upload").onchange = (event) => { if (event.target.files[0]) upload(event.target.files[0]); };

start().catch((e) => status(`error: ${e.message}`));
