// The allocation chart: what tasks held of one resource per role (or framework) against the log index, as
// stacked step areas (a state holds from one index to the next), with the agents' total and the offered.
import { h, s, fmtNum } from "./dom.js";

export const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#14b8a6", "#ec4899", "#84cc16",
  "#f97316", "#6366f1"];

export function allocationChart(data, { marker = null, onPick = null, width = 920, height = 300 } = {}) {
  const m = { l: 48, r: 16, t: 12, b: 30 };
  const W = width - m.l - m.r;
  const H = height - m.t - m.b;
  const samples = data.samples;
  const keys = data.series.map((x) => x.key);
  const lo = data.from;
  const hi = Math.max(data.to, lo + 1);
  let ymax = 0;
  for (const p of samples) {
    const held = keys.reduce((a, k) => a + (p.allocated[k] || 0), 0);
    ymax = Math.max(ymax, p.total, held + p.offered);
  }
  ymax = ymax > 0 ? ymax * 1.08 : 1;
  const x = (i) => m.l + ((i - lo) / (hi - lo)) * W;
  const y = (v) => m.t + H - (v / ymax) * H;

  // A step path through the points [(index, value)], closed down to `base` (the series below it) for an area.
  const stepLine = (pts) => pts.map(([i, v], n) => {
    const px = x(i).toFixed(1);
    const py = y(v).toFixed(1);
    return n === 0 ? `M${px},${py}` : `H${px}V${py}`;
  }).join("") + `H${x(hi).toFixed(1)}`;
  const area = (top, base) => {
    let d = `${stepLine(top)}V${y(base[base.length - 1][1]).toFixed(1)}`;
    for (let j = base.length - 1; j >= 0; j--) {
      d += `H${x(base[j][0]).toFixed(1)}`;
      if (j > 0) d += `V${y(base[j - 1][1]).toFixed(1)}`;
    }
    return `${d}Z`;
  };

  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": `${data.resource} held per ${data.by} by log index` });
  // grid and axes
  for (let k = 0; k <= 4; k++) {
    const v = (ymax / 1.08) * (k / 4);
    svg.append(s("line", { x1: m.l, x2: m.l + W, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: m.l - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fmtNum(v, 1)));
  }
  for (let k = 0; k <= 5; k++) {
    const i = Math.round(lo + ((hi - lo) * k) / 5);
    svg.append(s("text", { x: x(i), y: m.t + H + 18, class: "tick", "text-anchor": "middle" }, String(i)));
  }
  // stacked areas
  let base = samples.map((p) => [p.index, 0]);
  keys.forEach((k, n) => {
    const top = samples.map((p, j) => [p.index, base[j][1] + (p.allocated[k] || 0)]);
    const color = PALETTE[n % PALETTE.length];
    svg.append(s("path", { d: area(top, base), fill: color, "fill-opacity": "0.75", stroke: color,
      "stroke-width": "1", class: "series" }, s("title", {}, data.series[n].name)));
    base = top;
  });
  const offered = samples.map((p, j) => [p.index, base[j][1] + p.offered]);
  svg.append(s("path", { d: area(offered, base), class: "offered" }, s("title", {}, "offered")));
  svg.append(s("path", { d: stepLine(samples.map((p) => [p.index, p.total])), class: "total" },
    s("title", {}, "total of the agents")));
  if (marker !== null && marker >= lo && marker <= hi) {
    svg.append(s("line", { x1: x(marker), x2: x(marker), y1: m.t, y2: m.t + H, class: "marker" }),
      s("text", { x: x(marker) + 4, y: m.t + 12, class: "tick marker-label" }, `@${marker}`));
  }
  svg.append(s("line", { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, class: "axis" }),
    s("text", { x: m.l + 4, y: m.t + 10, class: "tick axis-label" }, data.resource));
  const first = samples[0];
  const last = samples[samples.length - 1];
  const when = (p) => (p && p.ts ? new Date(p.ts * 1000).toISOString().slice(11, 19) : "?");
  if (onPick) {
    const hit = s("rect", { x: m.l, y: m.t, width: W, height: H, class: "hit" });
    hit.addEventListener("click", (e) => {
      const r = svg.getBoundingClientRect();
      const px = ((e.clientX - r.left) / r.width) * width;
      onPick(Math.round(lo + ((px - m.l) / W) * (hi - lo)));
    });
    svg.append(hit);
  }
  const caption = h("div", { class: "caption" }, `log index ${first.index} (${when(first)} UTC) → `,
    `${last.index} (${when(last)} UTC), ${samples.length} samples`);
  const legend = h("div", { class: "legend" },
    data.series.map((x, n) => h("span", { class: "key" },
      swatch(PALETTE[n % PALETTE.length]), x.name === x.key ? x.key : `${x.name} (${x.key.split("-").pop()})`)),
    h("span", { class: "key" }, swatch("#cbd5e1"), "offered"),
    h("span", { class: "key" }, swatch("#111827", true), "total of the agents"));
  return h("div", { class: "chart-box" }, svg, caption, legend);
}

function swatch(color, line = false) {
  const sw = h("span", { class: line ? "swatch line" : "swatch" });
  sw.style.background = line ? "transparent" : color;
  sw.style.borderColor = color;
  return sw;
}
