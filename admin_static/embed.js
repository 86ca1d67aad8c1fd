// The embed playground: texts -> float vectors, their first values and a similarity heat map.

import { heatmap } from "./charts.js";
import { $, busy, fmtInt, fmtMs, h, showError } from "./dom.js";
import { call } from "./rpc.js";

const MAX_TEXTS = 256;
const HEAT_MAX = 32;
const FIRST_VALUES = 6;
const dark = window.matchMedia("(prefers-color-scheme: dark)");
let last = null; // {texts, vectors}: redrawn when the colour scheme changes

/** An Error the page made itself (bad input), shown like the service's errors. */
export function inputError(message) {
  return Object.assign(new Error(message), { title: "Check the input" });
}

/** JSON-RPC params that pick the model: the free-text id wins over the select. */
export function target(selectValue, custom) {
  const text = (custom || "").trim();
  if (text) return { model: text };
  if (selectValue && selectValue.startsWith("q:")) return { quality: Number(selectValue.slice(2)) };
  if (selectValue && selectValue.startsWith("m:")) return { model: selectValue.slice(2) };
  return {};
}

export function lines(text) {
  return text
    .split("\n")
    .map((s) => s.trim())
    .filter(Boolean);
}

export function initEmbed() {
  $("embed-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  dark.addEventListener("change", () => {
    if (last) drawHeat();
  });
}

async function run() {
  const box = $("embed-error");
  const texts = lines($("embed-texts").value);
  if (!texts.length) return showError(box, inputError("Enter at least one text, one per line."));
  if (texts.length > MAX_TEXTS) {
    return showError(box, inputError(`The playground takes up to ${MAX_TEXTS} texts; there are ${texts.length}.`));
  }
  const params = { texts, format: "float", ...target($("embed-model").value, $("embed-custom").value) };
  if ($("embed-query").checked) params.query = true;
  await busy($("embed-submit"), async () => {
    const t0 = performance.now();
    try {
      const result = await call("embed", params);
      const ms = performance.now() - t0;
      showError(box, null);
      render(texts, result, ms);
    } catch (err) {
      $("embed-result").hidden = true;
      showError(box, err);
    }
  });
}

function norm(v) {
  let s = 0;
  for (const x of v) s += x * x;
  return Math.sqrt(s);
}

export function cosineMatrix(vectors) {
  const norms = vectors.map(norm);
  return vectors.map((a, i) =>
    vectors.map((b, j) => {
      let dot = 0;
      for (let k = 0; k < a.length; k += 1) dot += a[k] * b[k];
      const d = norms[i] * norms[j];
      return d ? dot / d : 0;
    }),
  );
}

function metaItem(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value));
}

function render(texts, r, ms) {
  $("embed-meta").replaceChildren(
    metaItem("Model", r.model),
    metaItem("Level", r.quality ? `Q${r.quality}` : "—"),
    metaItem("Dims", String(r.dimensions)),
    metaItem("Precision", r.precision),
    metaItem("Wire", r.encoding),
    metaItem("Tokens", fmtInt(r.tokens)),
    metaItem("Latency", fmtMs(ms)),
  );
  const rows = r.embeddings.map((v, i) =>
    h(
      "tr",
      {},
      h("td", { class: "num" }, String(i + 1)),
      h("td", { class: "clip", title: texts[i] }, texts[i]),
      h("td", { class: "num" }, r.token_counts ? String(r.token_counts[i]) : "—"),
      h("td", { class: "num" }, norm(v).toFixed(3)),
      h(
        "td",
        { class: "vals" },
        `[${v
          .slice(0, FIRST_VALUES)
          .map((x) => x.toFixed(4))
          .join(", ")}${v.length > FIRST_VALUES ? ", …" : ""}]`,
      ),
    ),
  );
  $("embed-vectors").tBodies[0].replaceChildren(...rows);
  last = { texts, vectors: r.embeddings };
  drawHeat();
  $("embed-result").hidden = false;
}

function drawHeat() {
  const wrap = $("embed-heatmap");
  const { texts, vectors } = last;
  if (vectors.length > HEAT_MAX) {
    wrap.replaceChildren(h("p", { class: "muted small" }, `The heat map is drawn for up to ${HEAT_MAX} texts.`));
    return;
  }
  wrap.replaceChildren(heatmap(cosineMatrix(vectors), { dark: dark.matches, names: texts }));
}
