// Entry point: wires the panels and fills the model pickers from `models.describe`.

import { initBench } from "./bench.js";
import { h } from "./dom.js";
import { initEmbed } from "./embed.js";
import { initRerank } from "./rerank.js";
import { call } from "./rpc.js";
import { startStatus } from "./status.js";

function embeddingOptions(models) {
  const embedders = models.filter((m) => m.kind === "embedding");
  const levels = embedders.filter((m) => m.level).sort((a, b) => a.level - b.level);
  const byLevel = h(
    "optgroup",
    { label: "Quality level" },
    levels.map((m) => h("option", { value: `q:${m.level}`, title: `${m.precision}, ${m.dims} dims` }, `Q${m.level} · ${m.id}`)),
  );
  const byId = h(
    "optgroup",
    { label: "Model" },
    embedders.map((m) => h("option", { value: `m:${m.id}` }, m.id)),
  );
  return { groups: [byLevel, byId], fallback: levels.find((m) => m.level === 2) ? "q:2" : levels[0] ? `q:${levels[0].level}` : "" };
}

function fill(select, models) {
  const keep = select.value;
  const { groups, fallback } = embeddingOptions(models);
  select.replaceChildren(...groups);
  select.value = keep || fallback;
  if (!select.value && select.options.length) select.selectedIndex = 0;
}

function fillRerankers(select, models) {
  const rerankers = models.filter((m) => m.kind === "rerank");
  if (!rerankers.length) {
    select.replaceChildren(h("option", { value: "" }, "(no reranker in this catalog)"));
    return;
  }
  select.replaceChildren(...rerankers.map((m) => h("option", { value: m.id, dataset: { scorer: m.scorer || "" } }, `${m.id} (${m.scorer || "?"})`)));
}

async function loadModels(attempt = 0) {
  try {
    const models = await call("models.describe");
    fill(document.getElementById("embed-model"), models);
    fill(document.getElementById("bench-model"), models);
    fillRerankers(document.getElementById("rerank-model"), models);
  } catch {
    // The status panel reports the connection; try again a little later.
    setTimeout(() => loadModels(attempt + 1), Math.min(10000, 1000 * 2 ** attempt));
  }
}

function main() {
  startStatus();
  initEmbed();
  initRerank();
  initBench();
  loadModels();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
else main();
