// The benchmark: `concurrency` loops of `embed` calls from this browser until the duration ends.

import { histogram, percentile, timeline } from "./charts.js";
import { $, fmtInt, fmtMs, fmtNum, h, setText, showError } from "./dom.js";
import { inputError, target } from "./embed.js";
import { call } from "./rpc.js";

export const LIMITS = {
  batch: [1, 256],
  concurrency: [1, 32],
  duration: [1, 60],
  words: [1, 400],
};
const GRACE_MS = 15000; // a call still running this long after the end is cut off
const OVERLOADED = -32005;

const WORDS = (
  "vector search index model token query document ranking embedding retrieval cosine " +
  "similarity semantic language dense sparse batch latency throughput cluster memory " +
  "network river mountain city coffee morning garden history music science ocean " +
  "library window summer winter market bridge engine signal pattern quiet bright " +
  "ancient modern simple careful quick slow green blue golden paper stone light"
).split(" ");

/** Deterministic texts (a small xorshift PRNG), different from one request to the next. */
export function makeTexts(count, words, seed = 12345) {
  let x = seed >>> 0 || 1;
  const rand = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
  const out = [];
  for (let i = 0; i < count; i += 1) {
    const w = [];
    for (let j = 0; j < words; j += 1) w.push(WORDS[Math.floor(rand() * WORDS.length)]);
    w[0] = w[0][0].toUpperCase() + w[0].slice(1);
    out.push(`${w.join(" ")}.`);
  }
  return out;
}

function readInt(id, [lo, hi], name) {
  const raw = $(id).value.trim();
  const v = Number(raw);
  if (!raw || !Number.isInteger(v) || v < lo || v > hi) {
    throw inputError(`${name} must be a whole number from ${lo} to ${hi}.`);
  }
  return v;
}

let running = null; // the AbortController of the run in progress

export function initBench() {
  $("bench-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!running) start();
  });
  $("bench-stop").addEventListener("click", () => {
    if (running) running.abort("stopped");
  });
}

const CONTROLS = ["bench-model", "bench-batch", "bench-concurrency", "bench-duration", "bench-words", "bench-start"];

function setRunning(on) {
  for (const id of CONTROLS) $(id).disabled = on;
  $("bench-stop").disabled = !on;
  $("bench-start").setAttribute("aria-busy", on ? "true" : "false");
}

async function start() {
  const box = $("bench-error");
  let cfg;
  try {
    cfg = {
      batch: readInt("bench-batch", LIMITS.batch, "Batch size"),
      concurrency: readInt("bench-concurrency", LIMITS.concurrency, "Concurrency"),
      duration: readInt("bench-duration", LIMITS.duration, "Duration"),
      words: readInt("bench-words", LIMITS.words, "Words per text"),
      pick: target($("bench-model").value, ""),
    };
  } catch (err) {
    showError(box, err);
    return;
  }
  showError(box, null);
  const pool = makeTexts(Math.min(2048, Math.max(64, cfg.batch * cfg.concurrency * 4)), cfg.words);
  const ctrl = new AbortController();
  running = ctrl;
  setRunning(true);

  const t0 = performance.now();
  const end = t0 + cfg.duration * 1000;
  const run = { latencies: [], done: [], texts: 0, tokens: 0, errors: 0, firstError: null, model: null };
  const hardStop = setTimeout(() => ctrl.abort("timeout"), cfg.duration * 1000 + GRACE_MS);
  const ticker = setInterval(() => progress(run, t0, cfg), 200);

  const loop = async (k) => {
    let cursor = k * cfg.batch;
    while (!ctrl.signal.aborted && performance.now() < end) {
      const texts = [];
      for (let i = 0; i < cfg.batch; i += 1) texts.push(pool[(cursor + i) % pool.length]);
      cursor += cfg.batch * cfg.concurrency;
      const s = performance.now();
      try {
        const r = await call("embed", { texts, ...cfg.pick }, { signal: ctrl.signal });
        const e = performance.now();
        run.latencies.push(e - s);
        run.done.push({ t: (e - t0) / 1000, texts: texts.length });
        run.texts += texts.length;
        run.tokens += r.tokens || 0;
        run.model = run.model || r.model;
      } catch (err) {
        if (ctrl.signal.aborted) break;
        run.errors += 1;
        run.firstError = run.firstError || err;
        if (err.code !== OVERLOADED) {
          ctrl.abort("error"); // not ready, unknown model, ...: every call would fail alike
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 100)); // back off when overloaded
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: cfg.concurrency }, (_, k) => loop(k)));
  } finally {
    clearTimeout(hardStop);
    clearInterval(ticker);
    running = null;
    setRunning(false);
  }
  const elapsed = (performance.now() - t0) / 1000;
  const reason = ctrl.signal.aborted ? String(ctrl.signal.reason) : "finished";
  $("bench-progress").value = 1;
  if (run.firstError) showError(box, run.firstError);
  finish(run, cfg, elapsed, reason);
}

function progress(run, t0, cfg) {
  const elapsed = (performance.now() - t0) / 1000;
  $("bench-progress").value = Math.min(1, elapsed / cfg.duration);
  const rate = elapsed > 0 ? run.texts / elapsed : 0;
  setText(
    "bench-live",
    `${elapsed.toFixed(1)} s · ${fmtInt(run.latencies.length)} requests · ${fmtNum(rate)} texts/s` +
      (run.errors ? ` · ${run.errors} errors` : ""),
  );
}

function finish(run, cfg, elapsed, reason) {
  const n = run.latencies.length;
  const sorted = [...run.latencies].sort((a, b) => a - b);
  const p50 = percentile(sorted, 50);
  const p90 = percentile(sorted, 90);
  const p99 = percentile(sorted, 99);
  setText("bench-texts-s", fmtNum(run.texts / elapsed));
  setText("bench-tokens-s", fmtNum(run.tokens / elapsed));
  setText("bench-req-s", fmtNum(n / elapsed));
  setText("bench-p50", fmtMs(p50));
  setText("bench-p90", fmtMs(p90));
  setText("bench-p99", fmtMs(p99));
  const why = { finished: "", stopped: " · stopped by you", error: " · stopped on an error", timeout: " · cut off" }[reason] ?? "";
  const mean = n ? run.latencies.reduce((a, b) => a + b, 0) / n : NaN;
  setText(
    "bench-summary",
    `${fmtInt(n)} requests (${run.errors} errors) · ${fmtInt(run.texts)} texts · ${fmtInt(run.tokens)} tokens in ` +
      `${elapsed.toFixed(1)} s · model ${run.model || "—"} · batch ${cfg.batch} · concurrency ${cfg.concurrency} · ` +
      `mean ${fmtMs(mean)} · max ${fmtMs(sorted[n - 1])}${why}`,
  );
  setText("bench-live", `done${why}`);

  const hist = $("bench-histogram");
  const line = $("bench-timeline");
  if (!n) {
    hist.replaceChildren(h("p", { class: "muted small" }, "No request completed."));
    line.replaceChildren();
  } else {
    hist.replaceChildren(
      histogram(run.latencies, {
        marks: [
          { label: "p50", value: p50 },
          { label: "p90", value: p90 },
          { label: "p99", value: p99 },
        ],
      }),
    );
    const step = elapsed <= 12 ? 0.5 : 1;
    // The last bucket runs to the end, so the calls that finish after the deadline do not
    // make a spike out of a sliver of time.
    const buckets = new Array(Math.max(1, Math.round(elapsed / step))).fill(0);
    for (const d of run.done) buckets[Math.min(buckets.length - 1, Math.floor(d.t / step))] += d.texts;
    const points = buckets.map((count, i) => {
      const width = i === buckets.length - 1 ? Math.max(elapsed - i * step, 1e-3) : step;
      return { t: i * step + width / 2, v: count / width };
    });
    line.replaceChildren(timeline(points, { duration: elapsed, unit: "texts/s" }));
  }
  $("bench-result").hidden = false;
}
