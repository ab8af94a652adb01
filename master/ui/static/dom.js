// Building the DOM safely: every string from the cluster (ids, names, labels: user-controlled) goes through
// textContent or setAttribute, never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// h("a", {href: "#/x", class: "k"}, "text", child, [more]): an element.
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function table(headers, rows, empty = "none") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

export function fmtNum(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const r = Math.round(v * 10 ** digits) / 10 ** digits;
  return String(r);
}

export function fmtMem(mb) {
  if (mb === null || mb === undefined) return "-";
  return mb >= 1024 ? `${fmtNum(mb / 1024, 1)} GB` : `${fmtNum(mb, 0)} MB`;
}

export function fmtTime(ts) {
  if (!ts) return "-";
  const d = new Date(ts * 1000);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function stateBadge(state) {
  const st = String(state || "").replace(/^TASK_/, "");
  const kind = { RUNNING: "ok", FINISHED: "done", STARTING: "warn", STAGING: "warn", KILLING: "warn",
    FAILED: "bad", ERROR: "bad", LOST: "bad", KILLED: "muted", DROPPED: "bad", GONE: "bad",
    UNREACHABLE: "bad" }[st] || "muted";
  return h("span", { class: `badge ${kind}` }, st || "?");
}

export function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const fill = h("div", { class: "fill" });
  fill.style.width = `${pct.toFixed(1)}%`; // CSSOM, which the CSP allows (a style attribute it would not)
  return h("div", { class: "bar", title: label || `${fmtNum(used)} / ${fmtNum(total)}` },
    fill, h("span", {}, label || `${fmtNum(used)} / ${fmtNum(total)}`));
}
