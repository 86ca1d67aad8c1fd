// The status panel: polls health, status, mem_info and ort_info (one JSON-RPC batch) every 2 s.

import { $, fmtBytes, fmtDuration, fmtInt, fmtNum, h, setText, showError } from "./dom.js";
import { batch, health, RpcError } from "./rpc.js";

const POLL_MS = 2000;
const TIMEOUT_MS = 8000;

// Each worker keeps its own counters; the last snapshot seen from each live worker is summed.
const counters = new Map(); // pid -> {modelId: {runs, texts, jobs}}
let timer = null;
let inFlight = false;
let live = true;
let lastOk = null;

export function startStatus() {
  const toggle = $("live-toggle");
  toggle.addEventListener("change", () => {
    live = toggle.checked;
    if (live) schedule(0);
    else clearTimeout(timer);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && live) schedule(0);
  });
  schedule(0);
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  if (inFlight) return;
  inFlight = true;
  const ctrl = new AbortController();
  const t = setTimeout(() => ctrl.abort(), TIMEOUT_MS);
  try {
    const replies = await batch([["health"], ["status"], ["mem_info"], ["ort_info"]], { signal: ctrl.signal });
    const failed = replies.find((r) => r.error);
    if (failed) throw failed.error;
    const [hl, st, mem, ort] = replies.map((r) => r.result);
    render(hl, st, mem, ort);
    lastOk = Date.now();
    showError($("conn-error"), null);
  } catch (err) {
    await unreachable(err);
  } finally {
    clearTimeout(t);
    inFlight = false;
    if (live && !document.hidden) schedule(POLL_MS);
  }
}

function setBadge(state, text) {
  const badge = $("state-badge");
  badge.dataset.state = state;
  badge.textContent = text || state;
  setText("kpi-state", text || state);
}

async function unreachable(err) {
  const error =
    err && err.name === "AbortError" ? new RpcError(`no answer within ${TIMEOUT_MS / 1000} s`) : err;
  const since = lastOk ? ` Showing the last answer, from ${new Date(lastOk).toLocaleTimeString()}.` : "";
  try {
    const hl = await health();
    setBadge(hl.status || "unknown");
    error.message = `${error.message}. /health still answers “${hl.status}”.${since}`;
  } catch {
    setBadge("unreachable");
    error.message = `${error.message}.${since}`;
  }
  showError($("conn-error"), error);
}

function render(hl, st, mem, ort) {
  setBadge(hl.status);
  const models = st.models || [];
  setText("kpi-ready", `${(hl.models_loaded || []).length} / ${models.length}`);
  setText("kpi-uptime", fmtDuration(st.uptime_s));
  setText("kpi-ort", ort.version);
  setText("top-sub", `admin · catalog ${st.catalog}`);
  setText("status-updated", `updated ${new Date().toLocaleTimeString()} · answered by worker ${mem.answered_by}`);

  const errors = hl.errors ? Object.entries(hl.errors) : [];
  // A cause shared by several models (a Hub that cannot be reached) is said once, first.
  const causes = hl.failures ? Object.entries(hl.failures) : [];
  const retry = hl.retry_in !== undefined ? [`Failed downloads are retried in ${fmtDuration(hl.retry_in)}.`] : [];
  const box = $("health-errors");
  if (errors.length) {
    showError(box, {
      title: hl.status === "error" ? "No model could be loaded" : "Some models failed to load",
      message: [
        ...causes.map(([key, msg]) => `failures.${key}: ${msg}`),
        ...retry,
        ...errors.map(([id, msg]) => `${id}: ${msg}`),
      ].join("\n"),
    });
    box.classList.toggle("warn", hl.status === "degraded");
  } else showError(box, null);

  const pids = new Set((mem.workers || []).map((w) => w.pid));
  for (const pid of counters.keys()) if (!pids.has(pid)) counters.delete(pid);
  const snap = {};
  for (const m of models) if (m.batching) snap[m.id] = m.batching;
  counters.set(mem.answered_by, snap);

  renderModels(models);
  renderDownloads(st.downloads || {}, models);
  renderMemory(mem);
  renderRuntime(st, ort, mem);
}

function summed(id) {
  let found = false;
  const out = { runs: 0, texts: 0, jobs: 0 };
  for (const snap of counters.values()) {
    const b = snap[id];
    if (!b) continue;
    found = true;
    out.runs += b.runs || 0;
    out.texts += b.texts || 0;
    out.jobs += b.jobs || 0;
  }
  return found ? out : null;
}

// The answering worker's queue for a model: texts, and the seconds of work they hold.
function queued(q) {
  if (!q) return "—";
  if (!q.texts) return "0";
  const work = q.seconds === null || q.seconds === undefined ? "" : ` · ~${fmtNum(q.seconds)} s`;
  return `${fmtInt(q.texts)}${work}`;
}

function renderModels(models) {
  const rows = models.map((m) => {
    const c = summed(m.id);
    const state = h("span", { class: "badge small", dataset: { state: m.state } }, m.state);
    return h(
      "tr",
      { dataset: { model: m.id, state: m.state } },
      h(
        "td",
        { class: "id", title: m.description || "" },
        m.id,
        h("span", { class: "sub" }, m.kind === "rerank" ? `rerank · ${m.scorer || "?"}` : `embedding · ${m.pooling || ""}`),
      ),
      h("td", {}, m.level ? `Q${m.level}` : "—"),
      h("td", { class: "num" }, m.dims ?? "—"),
      h("td", {}, m.precision || "—"),
      h("td", { class: "runtime" }, m.backend ? `${m.backend} · ${m.compute_precision || "?"}` : "—"),
      h("td", { class: "num" }, m.max_tokens ?? "—"),
      h("td", {}, state, m.error ? h("span", { class: "err-text" }, m.error) : null),
      h("td", { class: "num" }, fmtBytes(m.disk_bytes)),
      h("td", { class: "num" }, m.load_seconds === null || m.load_seconds === undefined ? "—" : `${m.load_seconds.toFixed(1)} s`),
      h("td", { class: "num" }, c ? fmtInt(c.runs) : "—"),
      h("td", { class: "num" }, c ? fmtInt(c.texts) : "—"),
      h("td", { class: "num" }, c ? fmtInt(c.jobs) : "—"),
      h("td", { class: "num queued", dataset: { texts: m.queue ? m.queue.texts : "" } }, queued(m.queue)),
    );
  });
  $("models-body").replaceChildren(...rows);
  let texts = 0;
  for (const m of models) texts += summed(m.id)?.texts || 0;
  setText("kpi-texts", fmtInt(texts));
}

function fileLine(f, ownerId) {
  const total = f.bytes_total || 0;
  const done = f.bytes_done || 0;
  const bar = h("progress", { max: total || 1, "aria-label": `${f.name} progress` });
  if (total && f.state !== "building") bar.value = Math.min(done, total);
  if (f.state === "done") bar.value = total || 1;
  const what = f.state === "done" ? "done" : total ? `${fmtBytes(done)} / ${fmtBytes(total)}` : f.state;
  const name = f.model && f.model !== ownerId ? `${f.model}/${f.name}` : f.name;
  return h(
    "div",
    { class: "dl-file" },
    h("span", { class: "name", title: name }, name),
    bar,
    h("span", { class: "val" }, f.interrupted ? `${what} (interrupted)` : what, f.error ? ` · ${f.error}` : ""),
  );
}

function renderDownloads(downloads, models) {
  const box = $("downloads");
  const blocks = [];
  for (const [id, d] of Object.entries(downloads)) {
    if (!d || d.state === "ready") continue;
    const total = d.bytes_total || 0;
    const overall = h("progress", { max: total || 1, "aria-label": `${id} download progress` });
    if (total) overall.value = Math.min(d.bytes_done || 0, total);
    const files = (d.files || []).filter((f) => f.state !== "done");
    blocks.push(
      h(
        "div",
        { class: "dl", dataset: { model: id } },
        h(
          "div",
          { class: "dl-head" },
          h("strong", {}, id),
          h(
            "span",
            { class: "muted small" },
            h("span", { class: "badge small", dataset: { state: d.state } }, d.state),
            " ",
            total ? `${fmtBytes(d.bytes_done)} / ${fmtBytes(total)} (${Math.floor(((d.bytes_done || 0) / total) * 100)}%)` : "",
          ),
        ),
        overall,
        files.map((f) => fileLine(f, id)),
      ),
    );
  }
  if (blocks.length) {
    box.replaceChildren(h("h3", {}, "Downloads"), ...blocks);
  } else {
    const disk = models.reduce((sum, m) => sum + (m.disk_bytes || 0), 0);
    box.replaceChildren(h("p", { class: "muted small" }, `All model files are on disk (${fmtBytes(disk)}).`));
  }
}

function memRow(label, value, max, text) {
  const meter = h("meter", { min: 0, max: max || 1, "aria-label": label });
  meter.value = value || 0;
  return h("div", { class: "mem-row" }, h("span", {}, label), meter, h("span", { class: "val" }, text));
}

function renderMemory(mem) {
  const sys = mem.system || {};
  const procs = [];
  if (mem.master) procs.push({ ...mem.master, role: "master" });
  for (const w of mem.workers || []) procs.push({ ...w, role: "worker" });
  const rssSum = procs.reduce((s, p) => s + (p.rss || 0), 0);
  const ussSum = procs.reduce((s, p) => s + (p.uss || 0), 0);
  setText("kpi-rss", `${(mem.workers || []).length} · ${fmtBytes(rssSum)}`);
  const maxRss = Math.max(...procs.map((p) => p.rss || 0), 1);
  const rows = procs.map((p) =>
    h(
      "tr",
      { class: p.pid === mem.answered_by ? "me" : null, title: p.pid === mem.answered_by ? "answered this poll" : null },
      h("td", {}, p.role),
      h("td", { class: "num" }, p.pid),
      h("td", { class: "num" }, fmtBytes(p.rss)),
      h("td", { class: "num" }, fmtBytes(p.uss)),
      h("td", { class: "num" }, fmtBytes(p.pss)),
      h("td", { class: "bar-cell" }, (() => {
        const m = h("meter", { min: 0, max: maxRss, "aria-label": `RSS of ${p.role} ${p.pid}` });
        m.value = p.rss || 0;
        return m;
      })()),
    ),
  );
  const disk = Object.values(mem.models_disk || {}).reduce((s, v) => s + (v || 0), 0);
  $("memory").replaceChildren(
    memRow("System", sys.used, sys.total, `${fmtBytes(sys.used)} used of ${fmtBytes(sys.total)} · ${fmtBytes(sys.available)} available`),
    memRow("Service RSS", rssSum, sys.total, `${fmtBytes(rssSum)} (USS ${fmtBytes(ussSum)})`),
    h(
      "div",
      { class: "table-wrap mem-table" },
      h(
        "table",
        { class: "table", id: "mem-table" },
        h("caption", { class: "sr-only" }, "Memory per process"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Process"),
            h("th", { scope: "col", class: "num" }, "PID"),
            h("th", { scope: "col", class: "num" }, "RSS"),
            h("th", { scope: "col", class: "num", title: "unique set size: pages only this process has" }, "USS"),
            h("th", { scope: "col", class: "num", title: "proportional set size" }, "PSS"),
            h("th", { scope: "col" }, h("span", { class: "sr-only" }, "RSS bar")),
          ),
        ),
        h("tbody", {}, rows),
      ),
    ),
    h("p", { class: "muted small" }, `Model files on disk: ${fmtBytes(disk)}.`),
  );
}

function fact(dt, dd) {
  return [h("dt", {}, dt), h("dd", {}, dd)];
}

function renderRuntime(st, ort, mem) {
  const aliases = Object.entries(st.aliases || {}).map(([a, t]) => `${a} → ${t}`);
  $("runtime").replaceChildren(
    ...fact("ONNX Runtime", `${ort.version}${ort.version_ok ? "" : ` (below the tested minimum ${ort.min_version})`}`),
    ...fact("Providers", (ort.providers || []).join(", ") || "—"),
    ...fact("Device", ort.device || "—"),
    ...fact("Catalog", st.catalog || "—"),
    ...fact("Models root", st.models_root || "—"),
    ...fact("Aliases", aliases.length ? aliases.join(", ") : "none"),
    ...fact("Workers", String((mem.workers || []).length)),
  );
  const seen = [...counters.keys()].filter((pid) => (mem.workers || []).some((w) => w.pid === pid)).length;
  setText(
    "counters-note",
    `Runs, texts and jobs are summed over the ${seen} of ${(mem.workers || []).length} workers that have answered a poll so far; each worker counts its own. Queued is the queue of the worker that answered this poll (${mem.answered_by}).`,
  );
}
