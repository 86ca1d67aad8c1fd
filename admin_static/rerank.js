// The rerank playground: a query and documents, ranked best first with their scores as bars.

import { $, busy, fmtMs, h, showError } from "./dom.js";
import { inputError, lines } from "./embed.js";
import { call } from "./rpc.js";

const MAX_DOCS = 200;

export function initRerank() {
  $("rerank-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
}

async function run() {
  const box = $("rerank-error");
  const query = $("rerank-query").value.trim();
  const texts = lines($("rerank-docs").value);
  if (!query) return showError(box, inputError("Enter a query."));
  if (!texts.length) return showError(box, inputError("Enter at least one document, one per line."));
  if (texts.length > MAX_DOCS) {
    return showError(box, inputError(`The playground takes up to ${MAX_DOCS} documents; there are ${texts.length}.`));
  }
  const params = { query, docs: texts.map((text, i) => ({ id: i, text })) };
  const model = $("rerank-model").value;
  if (model) params.model = model;
  const topK = $("rerank-topk").value.trim();
  if (topK) {
    const k = Number(topK);
    if (!Number.isInteger(k) || k < 1) return showError(box, inputError("Top k must be a whole number of at least 1."));
    params.top_k = k;
  }
  if ($("rerank-raw").checked) params.raw = true;
  await busy($("rerank-submit"), async () => {
    const t0 = performance.now();
    try {
      const result = await call("rerank", params);
      const ms = performance.now() - t0;
      showError(box, null);
      const picked = $("rerank-model").selectedOptions[0];
      const scorer = picked ? picked.dataset.scorer : "";
      render(texts, result, { ms, raw: Boolean(params.raw), model: model || "(default)", scorer });
    } catch (err) {
      $("rerank-result").hidden = true;
      showError(box, err);
    }
  });
}

function metaItem(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value));
}

// `ranked` is the seed's result: an array of {id, score, index}, best first.
function render(texts, ranked, { ms, raw, model, scorer }) {
  $("rerank-meta").replaceChildren(
    metaItem("Model", model),
    metaItem("Scorer", scorer || "—"),
    metaItem("Latency", fmtMs(ms)),
  );
  const note = $("rerank-note");
  note.hidden = scorer !== "cosine";
  note.textContent = raw
    ? "Raw scores are cosine similarities of an embedding model's vectors, in [-1, 1]: this reranker is not a cross-encoder."
    : "Scores are cosine similarities of an embedding model's vectors mapped to [0, 1] as (cos + 1) / 2: this reranker is not a cross-encoder.";
  const scores = ranked.map((x) => x.score);
  // Bars over [0, 1] for probabilities and cosines; raw logits (or negatives) widen the scale.
  const lo = raw ? Math.min(...scores) : Math.min(0, ...scores);
  const hi = raw ? Math.max(...scores) : Math.max(1, ...scores);
  const items = ranked.map((x, rank) => {
    const fill = h("div", { class: "fill" });
    const pct = hi > lo ? ((x.score - lo) / (hi - lo)) * 100 : 100;
    fill.style.width = `${Math.max(1.5, Math.min(100, pct)).toFixed(1)}%`; // CSSOM: allowed by the CSP
    return h(
      "li",
      { dataset: { index: String(x.index), score: String(x.score) } },
      h("span", { class: "rank", "aria-label": `rank ${rank + 1}` }, String(rank + 1)),
      h("span", { class: "doc" }, texts[x.index] ?? String(x.id)),
      h(
        "div",
        { class: "score-row" },
        h("div", { class: "track", role: "presentation" }, fill),
        h("span", { class: "score" }, x.score.toFixed(4)),
      ),
    );
  });
  $("rerank-list").replaceChildren(...items);
  $("rerank-result").hidden = false;
}
