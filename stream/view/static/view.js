// sigstream view: draws the snapshots the view server pushes over /ws (stream/view/state.py
// describes them). Plain JavaScript and uPlot; everything it shows comes from the snapshot.
"use strict";

const sigview = window.sigview = {
  updates: 0, chosen: null, last: null, errors: [],
  drawn: { latency: 0, table: 0, trace: 0, waterfall: 0, strip: 0, slices: 0, meters: 0 },
};
window.addEventListener("error", (e) => sigview.errors.push(`${e.message} ${e.error ? e.error.stack : ""}`));
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const COLORS = { accept: "#2e7d32", reject: "#c62828", uncertain: "#ef6c00", status: "#8e24aa" };
const charts = {};

function chartWidth(el) { return Math.max(300, el.clientWidth || 600); }

function makeChart(key, el, opts, data) {
  if (!charts[key]) {
    charts[key] = new uPlot({ width: chartWidth(el), height: opts.height || 220, ...opts }, data, el);
  } else {
    charts[key].setData(data);
  }
  return charts[key];
}

function dropChart(key) {
  if (charts[key]) { charts[key].destroy(); delete charts[key]; }
}

// -- overview ------------------------------------------------------------------------------

function drawHealth(snap) {
  const el = $("health");
  const h = snap.health;
  if (!h) { el.className = "badge unknown"; el.textContent = "health: no metrics URL"; return; }
  el.className = "badge " + (h.ready ? "ok" : "bad");
  let why = "";
  if (!h.ready && h.detail && typeof h.detail === "object") {
    const stages = h.detail.stages || {};
    why = Object.entries(stages).filter(([, s]) => s !== "ready").map(([n, s]) => `${n} ${s}`).join(", ");
  } else if (!h.ready) {
    why = h.reason || "";
  }
  el.textContent = h.ready ? "ready" : `not ready ${why}`;
  el.title = JSON.stringify(h.detail || h.reason || "");
}

function drawLatency(snap) {
  const l = snap.latency;
  const data = [l.t, l.p50_ms, l.p99_ms, l.rate];
  makeChart("latency", $("latency"), {
    height: 180,
    scales: { x: { time: true, range: () => [sigview.last.t - 120, sigview.last.t] }, ms: { distr: 3 }, rate: {} },
    axes: [{}, { scale: "ms", label: "ms" }, { scale: "rate", side: 1, label: "results/s", grid: { show: false } }],
    series: [{}, { label: "p50 ms", scale: "ms", stroke: "#1565c0" },
      { label: "p99 ms", scale: "ms", stroke: "#c62828" },
      { label: "results/s", scale: "rate", stroke: "#9e9e9e", width: 1 }],
  }, data);
  sigview.drawn.latency++;
}

function counts(obj) {
  const parts = Object.entries(obj || {}).map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(", ") : "0";
}

function drawTable(snap) {
  const body = $("streams").tBodies[0];
  const rows = new Map([...body.rows].map((r) => [r.dataset.stream, r]));
  const seen = new Set();
  let total = 0;
  for (const s of snap.streams) {
    seen.add(s.stream);
    total += s.rate;
    let tr = rows.get(s.stream);
    if (!tr) {
      tr = body.insertRow();
      tr.dataset.stream = s.stream;
      for (let i = 0; i < 10; i++) tr.insertCell();
      tr.cells[8].className = "reason";
      tr.addEventListener("click", () => choose(s.stream));
    }
    tr.classList.toggle("stale", s.stale);
    tr.classList.toggle("chosen", s.stream === sigview.chosen);
    tr.dataset.path = s.path || "";
    const cells = [s.stream, s.path || "–", fmt(s.rate), fmt(s.p50_ms), fmt(s.p99_ms), s.results,
      counts(s.drops), counts(s.errors), s.last_error || "", `${fmt(s.age_s)} s ago`];
    cells.forEach((text, i) => { if (tr.cells[i].textContent !== String(text)) tr.cells[i].textContent = text; });
    tr.cells[8].title = s.last_error || "";
  }
  for (const [name, tr] of rows) if (!seen.has(name)) tr.remove();
  $("streams-more").textContent = snap.streams_more ? `and ${snap.streams_more} more streams` : "";
  $("summary").textContent = `${snap.streams.length + snap.streams_more} streams, ${fmt(total)} results/s`;
  const q = Object.entries(snap.queues || {}).map(([stage, v]) => `${stage} ${v.depth ?? "?"}/${v.capacity ?? "?"}`);
  $("queues").textContent = q.length ? `queues: ${q.join(", ")}` : "";
  sigview.drawn.table++;
  if (!sigview.chosen) {
    const first = snap.streams.find((s) => s.drawn && !s.stale);
    if (first) choose(first.stream);
  }
}

// -- panels --------------------------------------------------------------------------------

function showPanel(kind) {
  for (const id of ["trace", "strip", "slices"]) $(id).hidden = id !== kind;
}

function drawTrace(panel) {
  const d = panel.data;
  if (!d) return;
  drawWaterfall(panel.waterfall || [], d.length || Math.max(1, ...(d.markers || []).map((m) => m.x)));
  // A result drawn without its spectrum (no mirror) has no curve: the chart keeps what it
  // shows (a uPlot made with no x values has no x range and never draws).
  const curve = d.curve;
  if (!curve || !curve.x.length) return;
  sigview.markers = d.markers;
  sigview.spans = d.spans;
  makeChart("trace", $("trace-chart"), {
    height: 260,
    scales: { x: { time: false } },
    axes: [{ label: "sample" }, { label: panel.unit || "value" }],
    series: [{}, { label: panel.stream, stroke: "#1565c0", width: 1 }],
    legend: { show: false },
    cursor: { points: { show: false } },
    hooks: {
      drawClear: [(u) => drawSpans(u)],
      draw: [(u) => drawMarkers(u)],
      setCursor: [(u) => peakInfo(u)],
    },
  }, [curve.x, curve.y]);
  charts.trace.redraw(false);
  sigview.drawn.trace++;
}

// Regions of interest, shaded under the curve.
function drawSpans(u) {
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  ctx.save();
  ctx.fillStyle = "rgba(255, 160, 0, 0.18)";
  for (const [a, b] of sigview.spans || []) {
    const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
    ctx.fillRect(Math.max(left, x0), top, Math.min(left + width, x1) - Math.max(left, x0), height);
  }
  ctx.restore();
}

// Peaks, a triangle above each apex.
function drawMarkers(u) {
  const ctx = u.ctx;
  ctx.save();
  ctx.fillStyle = "#c62828";
  for (const m of sigview.markers || []) {
    if (m.y === null) continue;
    const x = u.valToPos(m.x, "x", true), y = u.valToPos(m.y, "y", true);
    ctx.beginPath();
    ctx.moveTo(x, y - 9); ctx.lineTo(x - 5, y - 17); ctx.lineTo(x + 5, y - 17); ctx.closePath();
    ctx.fill();
  }
  ctx.restore();
}

function peakInfo(u) {
  const tip = $("peak-info");
  const left = u.cursor.left;
  if (left === undefined || left < 0 || !sigview.markers) { tip.hidden = true; return; }
  let best = null, bestDx = 8;
  for (const m of sigview.markers) {
    const dx = Math.abs(u.valToPos(m.x, "x") - left);
    if (dx < bestDx) { best = m; bestDx = dx; }
  }
  if (!best) { tip.hidden = true; return; }
  const rect = u.over.getBoundingClientRect();
  tip.hidden = false;
  tip.style.left = `${rect.left + window.scrollX + left + 12}px`;
  tip.style.top = `${rect.top + window.scrollY + 8}px`;
  tip.textContent = `peak at ${fmt(best.x, 2)}  height ${fmt(best.height, 3)}  area ${fmt(best.area, 3)}  ` +
    `FWHM ${fmt(best.width, 2)}${best.overlaps ? "  (overlaps)" : ""}`;
}

function drawWaterfall(rows, length) {
  const c = $("waterfall");
  c.width = c.clientWidth || 900;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#10141c";
  ctx.fillRect(0, 0, c.width, c.height);
  const n = rows.length;
  ctx.fillStyle = "#ffca28";
  rows.forEach(([, xs], i) => {
    const y = c.height - (n - i) * (c.height / Math.max(n, 1));
    for (const x of xs) ctx.fillRect((x / length) * c.width - 1, y, 2, Math.max(1, c.height / Math.max(n, 1)));
  });
  sigview.drawn.waterfall++;
}

function drawStrip(panel) {
  const s = panel.strip || { t: [], y: [] };
  sigview.events = panel.events || [];
  makeChart("strip", $("strip-chart"), {
    height: 240,
    scales: { x: { time: false, range: [-10, 0] } },
    axes: [{ label: "seconds" }, { label: panel.unit || "value" }],
    series: [{}, { label: panel.stream, stroke: "#1565c0", width: 1 }],
    legend: { show: false },
    hooks: { draw: [(u) => drawEvents(u)] },
  }, [s.t, s.y]);
  charts.strip.redraw(false);
  const beats = sigview.events.filter((e) => e.class !== "status");
  const lastBeat = beats[beats.length - 1];
  const lastStatus = sigview.events.filter((e) => e.class === "status").pop();
  $("ecg-status").textContent = `heart rate ${lastBeat ? fmt(lastBeat.hr, 0) : "–"} bpm · ` +
    `quality ${lastBeat ? lastBeat.quality : "–"}` + (lastStatus ? ` · status ${lastStatus.label}: ${lastStatus.detail}` : "");
  const body = $("beats").tBodies[0];
  body.textContent = "";
  for (const e of sigview.events.slice(-12).reverse()) {
    const tr = body.insertRow();
    tr.className = e.class;
    const fused = e.fused ? `${e.fused.identity || "–"} ${e.fused.decision || ""}` : "";
    const cells = e.class === "status" ? [fmt(e.t, 1) + " s", "status", e.label, "", "", e.detail, ""]
      : [e.beat, e.class, e.identity || "–", fmt(e.score, 3), fmt(e.hr, 0), e.quality, fused];
    for (const text of cells) tr.insertCell().textContent = text ?? "";
    if (e.gradcam) tr.addEventListener("click", () => { sigview.pinned = e; drawGradcam(e); });
  }
  const explained = beats.filter((e) => e.gradcam).pop();
  if (!sigview.pinned && explained) drawGradcam(explained);
  sigview.drawn.strip++;
}

function drawEvents(u) {
  const ctx = u.ctx;
  const { top, height } = u.bbox;
  ctx.save();
  ctx.font = `${11 * devicePixelRatio}px system-ui`;
  for (const e of sigview.events || []) {
    const x = u.valToPos(e.t, "x", true);
    ctx.strokeStyle = ctx.fillStyle = COLORS[e.class] || "#555";
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
    ctx.fillText(e.class === "status" ? e.label : (e.label || ""), x + 3, top + 12 * devicePixelRatio);
  }
  ctx.restore();
}

function floats(b64) {
  const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

// An image of the snapshot in grey, lo..hi black to white; flip: first row at the bottom.
function paint(canvas, image, lo, hi, flip = false) {
  const [rows, cols] = image.shape;
  const values = floats(image.data);
  canvas.width = cols; canvas.height = rows;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const out = ctx.createImageData(cols, rows);
  const span = Math.max(hi - lo, 1e-12);
  for (let i = 0; i < values.length; i++) {
    const row = Math.floor(i / cols), j = (flip ? rows - 1 - row : row) * cols + (i % cols);
    const g = Math.max(0, Math.min(255, ((values[i] - lo) / span) * 255));
    out.data[4 * j] = out.data[4 * j + 1] = out.data[4 * j + 2] = g;
    out.data[4 * j + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

function drawGradcam(e) {
  const cam = e.gradcam;
  const c = $("gradcam");
  paint(c, cam.spectrogram, cam.spectrogram.min, cam.spectrogram.max, true);
  const heat = floats(cam.heatmap.data);
  const [rows, cols] = cam.heatmap.shape;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  const img = ctx.getImageData(0, 0, c.width, c.height);
  for (let k = 0; k < heat.length; k++) {
    const i = (rows - 1 - Math.floor(k / cols)) * cols + (k % cols);
    const h = heat[k] / 255;
    img.data[4 * i] = img.data[4 * i] * (1 - h) + 255 * h;
    img.data[4 * i + 1] *= 1 - h;
    img.data[4 * i + 2] *= 1 - h;
  }
  ctx.putImageData(img, 0, 0);
  $("gradcam-note").textContent = `Grad-CAM of beat ${e.beat} (${e.identity || e.class})` +
    (sigview.pinned === e ? " (pinned)" : " (latest)");
  sigview.drawn.gradcam = (sigview.drawn.gradcam || 0) + 1;
}

function drawSlices(panel) {
  const d = panel.data;
  if (!d) return;
  const w = $("window"), l = $("level");
  if (w.value === "" || l.value === "") {
    const [lo, hi] = panel.unit === "HU" ? [-160, 240] : [d.after.min, d.after.max];
    w.value = Math.round(hi - lo); l.value = Math.round((hi + lo) / 2);
  }
  const lo = Number(l.value) - Number(w.value) / 2, hi = Number(l.value) + Number(w.value) / 2;
  $("slice-unit").textContent = panel.unit;
  if (d.before) paint($("before"), d.before, lo, hi);
  paint($("after"), d.after, lo, hi);
  sigview.drawn.slices++;
}

function drawPanel(snap) {
  const p = snap.panel;
  if (!p) return;
  $("panel-title").textContent = `${p.stream} (${p.path})`;
  showPanel(p.panel);
  if (p.panel === "trace") drawTrace(p);
  else if (p.panel === "strip") drawStrip(p);
  else if (p.panel === "slices") drawSlices(p);
}

// -- meters (codec link ends) --------------------------------------------------------------

function drawMeters(snap) {
  const box = $("meters");
  $("meters-section").hidden = !snap.meters.length;
  for (const m of snap.meters) {
    const key = "meter:" + m.url;
    let el = box.querySelector(`[data-url="${CSS.escape(m.url)}"]`);
    if (!el) {
      el = document.createElement("div");
      el.className = "meter";
      el.dataset.url = m.url;
      el.innerHTML = '<h3></h3><div class="level"><div></div></div><p class="figures"></p><div class="chart"></div>';
      box.appendChild(el);
    }
    const level = m.level ?? -120;
    el.querySelector("h3").textContent = `${m.path} ${m.role} — ${m.url}`;
    el.querySelector(".level > div").style.width = `${Math.max(0, Math.min(100, ((level + 60) / 60) * 100))}%`;
    el.dataset.level = level;
    const lat = m.latency_ms ? `capture to playout p50 ${fmt(m.latency_ms[0])} ms, p99 ${fmt(m.latency_ms[1])} ms` : "";
    el.querySelector(".figures").textContent = `level ${fmt(level)} dBFS · ${counts(m.counters)}` +
      (Object.keys(m.errors || {}).length ? ` · errors ${counts(m.errors)}` : "") + (lat ? ` · ${lat}` : "");
    const names = Object.keys(m.history.rates);
    const data = [m.history.t, ...names.map((n) => m.history.rates[n])];
    if (charts[key] && charts[key].series.length !== names.length + 1) dropChart(key);
    makeChart(key, el.querySelector(".chart"), {
      height: 150, width: 400,
      scales: { x: { time: true } },
      series: [{}, ...names.map((n, i) => ({ label: `${n}/s`, stroke: ["#2e7d32", "#c62828", "#ef6c00", "#6a1b9a", "#1565c0"][i % 5] }))],
    }, data);
  }
  if (snap.meters.length) sigview.drawn.meters++;
}

// -- the connection ------------------------------------------------------------------------

let socket = null;

function choose(stream) {
  sigview.chosen = stream;
  history.replaceState(null, "", `#stream=${encodeURIComponent(stream)}`);
  for (const tr of $("streams").tBodies[0].rows) tr.classList.toggle("chosen", tr.dataset.stream === stream);
  for (const key of ["trace", "strip"]) dropChart(key);
  sigview.pinned = null;
  $("window").value = ""; $("level").value = "";
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ choose: stream }));
}

function onSnapshot(snap) {
  sigview.last = snap;
  sigview.updates++;
  drawHealth(snap);
  drawTable(snap);
  drawLatency(snap);
  drawPanel(snap);
  drawMeters(snap);
}

function connect() {
  const state = $("connection");
  socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.onopen = () => {
    state.className = "badge ok"; state.textContent = "live";
    if (sigview.chosen) socket.send(JSON.stringify({ choose: sigview.chosen }));
  };
  socket.onmessage = (event) => {
    try { onSnapshot(JSON.parse(event.data)); } catch (err) { sigview.errors.push(`${err} ${err.stack}`); }
  };
  socket.onclose = () => {
    state.className = "badge bad"; state.textContent = "view disconnected; retrying";
    setTimeout(connect, 1000);
  };
}

const wanted = new URLSearchParams(location.hash.slice(1)).get("stream");
if (wanted) sigview.chosen = wanted;
for (const id of ["window", "level"]) $(id).addEventListener("change", () => sigview.last && drawPanel(sigview.last));
connect();
