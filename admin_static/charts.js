// Small charts drawn as plain SVG (no library): a similarity heat map, a histogram, a line.

import { fmtNum, svg } from "./dom.js";

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return step * mag;
}

function ticks(lo, hi, count) {
  const span = hi - lo || 1;
  const step = niceStep(span, count);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9 && out.length < 50; v += step) {
    out.push(Number(v.toFixed(10)));
  }
  return out;
}

/** A tick label: at most 4 significant digits, no trailing zeros ("0.5", "40", "1200"). */
function tick(v) {
  return String(Number(v.toPrecision(4)));
}

function root(width, height, label, extraClass = "") {
  return svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    class: `chart ${extraClass}`.trim(),
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
}

/** Fill colour of a cosine similarity in [-1, 1]: blue for alike, orange for opposed. */
export function heatColor(v, dark) {
  const a = Math.min(1, Math.abs(v));
  const hue = v >= 0 ? 218 : 24;
  const light = dark ? 17 + a * 45 : 97 - a * 57;
  return { fill: `hsl(${hue} 72% ${light.toFixed(1)}%)`, onDark: dark ? light < 52 : light < 58 };
}

/** An n x n heat map of `matrix` (values in [-1, 1]); rows and columns are numbered 1..n. */
export function heatmap(matrix, { dark = false, names = [] } = {}) {
  const n = matrix.length;
  const cell = n <= 4 ? 64 : n <= 8 ? 48 : n <= 16 ? 30 : 18;
  const pad = 28;
  const size = n * cell;
  const legendX = pad + size + 18;
  const width = legendX + 52;
  const height = Math.max(pad + size + 6, 150);
  const chart = root(width, height, `Cosine similarity of ${n} texts, from -1 (orange) to 1 (blue)`, "heatmap");

  for (let i = 0; i < n; i += 1) {
    const mid = pad + i * cell + cell / 2;
    chart.append(svg("text", { x: mid, y: pad - 9, "text-anchor": "middle", class: "label" }, String(i + 1)));
    chart.append(svg("text", { x: pad - 8, y: mid + 4, "text-anchor": "end", class: "label" }, String(i + 1)));
  }
  for (let i = 0; i < n; i += 1) {
    for (let j = 0; j < n; j += 1) {
      const v = matrix[i][j];
      const { fill, onDark } = heatColor(v, dark);
      const x = pad + j * cell;
      const y = pad + i * cell;
      const a = names[i] ? ` “${names[i].slice(0, 60)}”` : "";
      const b = names[j] ? ` “${names[j].slice(0, 60)}”` : "";
      const rect = svg("rect", { x, y, width: cell, height: cell, fill, class: "cell", "data-value": v.toFixed(4) });
      rect.append(svg("title", {}, `text ${i + 1}${a} × text ${j + 1}${b}: ${v.toFixed(4)}`));
      chart.append(rect);
      if (cell >= 30) {
        chart.append(
          svg(
            "text",
            {
              x: x + cell / 2,
              y: y + cell / 2 + 4,
              "text-anchor": "middle",
              class: onDark ? "cell-on-dark" : "cell-on-light",
              "pointer-events": "none",
            },
            v.toFixed(2),
          ),
        );
      }
    }
  }

  // Legend: a vertical gradient from 1 (top) to -1 (bottom).
  const gid = `heat-grad-${Math.random().toString(36).slice(2, 8)}`;
  const grad = svg("linearGradient", { id: gid, x1: 0, y1: 0, x2: 0, y2: 1 });
  for (let k = 0; k <= 8; k += 1) {
    const v = 1 - k / 4;
    grad.append(svg("stop", { offset: `${(k / 8) * 100}%`, "stop-color": heatColor(v, dark).fill }));
  }
  chart.append(svg("defs", {}, grad));
  const lh = Math.max(size, 120);
  chart.append(svg("rect", { x: legendX, y: pad, width: 12, height: lh, fill: `url(#${gid})`, rx: 3 }));
  for (const [v, label] of [[1, "1"], [0, "0"], [-1, "−1"]]) {
    const y = pad + ((1 - v) / 2) * lh;
    chart.append(svg("line", { x1: legendX + 12, x2: legendX + 16, y1: y, y2: y, class: "axis-tick", stroke: "currentColor" }));
    chart.append(svg("text", { x: legendX + 19, y: y + 4 }, label));
  }
  return chart;
}

function axes(chart, m, iw, ih, xt, yt, xScale, yScale, fmtX, fmtY) {
  const g = svg("g", { class: "axis" });
  for (const v of yt) {
    const y = yScale(v);
    g.append(svg("line", { x1: m.l, x2: m.l + iw, y1: y, y2: y, class: "grid-line" }));
    g.append(svg("text", { x: m.l - 6, y: y + 4, "text-anchor": "end" }, fmtY(v)));
  }
  for (const v of xt) {
    const x = xScale(v);
    g.append(svg("line", { x1: x, x2: x, y1: m.t + ih, y2: m.t + ih + 4 }));
    g.append(svg("text", { x, y: m.t + ih + 17, "text-anchor": "middle" }, fmtX(v)));
  }
  g.append(svg("line", { x1: m.l, x2: m.l + iw, y1: m.t + ih, y2: m.t + ih }));
  chart.append(g);
}

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Histogram of latencies (ms) with markers [{label, value}] (p50, p90, p99). */
export function histogram(values, { marks = [], width = 640, height = 250 } = {}) {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  const m = { l: 46, r: 16, t: 26, b: 30 };
  const iw = width - m.l - m.r;
  const ih = height - m.t - m.b;
  const lo = Math.max(0, Math.floor(sorted[0]));
  // The slowest outliers fold into the last bar, so the bulk keeps its resolution.
  let hi = Math.min(sorted[n - 1], Math.max(percentile(sorted, 99) * 1.25, percentile(sorted, 50) * 2));
  if (!(hi > lo)) hi = lo + 1;
  const bins = Math.min(40, Math.max(10, Math.round(Math.sqrt(n) * 1.5)));
  const w = (hi - lo) / bins;
  const counts = new Array(bins).fill(0);
  for (const v of sorted) counts[Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / w)))] += 1;
  const maxC = Math.max(...counts, 1);
  const yt = ticks(0, maxC, 4).filter((v) => Number.isInteger(v));
  const yMax = Math.max(maxC, yt[yt.length - 1] || 1);
  const xScale = (v) => m.l + ((v - lo) / (hi - lo)) * iw;
  const yScale = (c) => m.t + ih - (c / yMax) * ih;
  const chart = root(
    width,
    height,
    `Latency histogram of ${n} requests; ${marks.map((k) => `${k.label} ${fmtNum(k.value)} ms`).join(", ")}`,
    "histogram",
  );
  axes(chart, m, iw, ih, ticks(lo, hi, 6), yt, xScale, yScale, tick, tick);
  const bars = svg("g", {});
  counts.forEach((c, i) => {
    if (!c) return;
    const x0 = xScale(lo + i * w);
    const bw = Math.max(1, iw / bins - 1.5);
    const y = yScale(c);
    const last = i === bins - 1 && sorted[n - 1] > hi;
    const rect = svg("rect", { x: x0 + 0.75, y, width: bw, height: m.t + ih - y, rx: 2, class: "bar" });
    const range = `${fmtNum(lo + i * w)}–${last ? "…" : fmtNum(lo + (i + 1) * w)} ms`;
    rect.append(svg("title", {}, `${range}: ${c} request${c === 1 ? "" : "s"}`));
    bars.append(rect);
  });
  chart.append(bars);
  marks.forEach((mk, k) => {
    if (!Number.isFinite(mk.value)) return;
    const x = Math.min(m.l + iw, Math.max(m.l, xScale(mk.value)));
    chart.append(svg("line", { x1: x, x2: x, y1: m.t - 4, y2: m.t + ih, class: "mark" }));
    // Labels step down so close percentiles stay readable; a halo keeps them clear of bars.
    const anchor = x > m.l + iw * 0.8 ? "end" : "start";
    const label = `${mk.label} ${fmtNum(mk.value)}`;
    chart.append(
      svg("text", { x: x + (anchor === "end" ? -4 : 4), y: m.t + 4 + k * 14, class: "mark-label", "text-anchor": anchor }, label),
    );
  });
  chart.append(svg("text", { x: m.l - 6, y: m.t + ih + 17, "text-anchor": "end" }, "ms"));
  return chart;
}

/** Throughput over time: points [{t: seconds, v: value}], drawn as an area under a line. */
export function timeline(points, { width = 640, height = 250, duration = null, unit = "" } = {}) {
  const m = { l: 52, r: 16, t: 18, b: 30 };
  const iw = width - m.l - m.r;
  const ih = height - m.t - m.b;
  const tMax = Math.max(duration || 0, ...points.map((p) => p.t), 1);
  const vMax = Math.max(...points.map((p) => p.v), 1);
  const yt = ticks(0, vMax * 1.1, 4);
  const yTop = Math.max(vMax * 1.1, yt[yt.length - 1]);
  const xScale = (t) => m.l + (t / tMax) * iw;
  const yScale = (v) => m.t + ih - (v / yTop) * ih;
  const chart = root(
    width,
    height,
    `Throughput over ${fmtNum(tMax)} s, peak ${fmtNum(vMax)} ${unit}`.trim(),
    "timeline",
  );
  axes(chart, m, iw, ih, ticks(0, tMax, 6), yt, xScale, yScale, (v) => `${tick(v)} s`, tick);
  if (points.length) {
    const coords = points.map((p) => `${xScale(p.t).toFixed(1)},${yScale(p.v).toFixed(1)}`);
    const base = (m.t + ih).toFixed(1);
    const area = `M${xScale(points[0].t).toFixed(1)},${base} L${coords.join(" L")} L${xScale(points[points.length - 1].t).toFixed(1)},${base} Z`;
    chart.append(svg("path", { d: area, class: "area" }));
    chart.append(svg("path", { d: `M${coords.join(" L")}`, class: "line" }));
    for (const p of points) {
      const dot = svg("circle", { cx: xScale(p.t), cy: yScale(p.v), r: 2.5, class: "dot" });
      dot.append(svg("title", {}, `${fmtNum(p.t)} s: ${fmtNum(p.v)} ${unit}`.trim()));
      chart.append(dot);
    }
  }
  return chart;
}
