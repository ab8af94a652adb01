// Drover's web UI: hash routes (#/agents/ID, #/frameworks/ID, #/tasks/FID/TID, ...), each page drawn from one
// /master/state-shaped document, live or replayed at a past log index (the scrubber).
import { h, clear, table, fmtNum, fmtMem, fmtTime, stateBadge, bar } from "./dom.js";
import { Cluster, getJSON } from "./api.js";
import { allocationChart } from "./chart.js";

const cluster = new Cluster();
const $ = (id) => document.getElementById(id);
const view = $("view");
const enc = encodeURIComponent;

// ---- the state, digested once per document ------------------------------------------------------------------

function digest(st) {
  const fws = new Map();
  const tasks = [];
  const add = (fw, list, completed) => {
    for (const t of list || []) tasks.push({ ...t, fwName: fw.name, completed });
  };
  for (const fw of st.frameworks || []) {
    fws.set(fw.id, { ...fw, gone: false });
    add(fw, fw.tasks, false);
    add(fw, fw.unreachable_tasks, false);
    add(fw, fw.completed_tasks, true);
  }
  for (const fw of st.completed_frameworks || []) {
    if (!fws.has(fw.id)) fws.set(fw.id, { ...fw, gone: true });
    add(fw, fw.completed_tasks, true);
  }
  const agents = new Map((st.slaves || []).map((a) => [a.id, a]));
  const total = { cpus: 0, mem: 0, disk: 0, gpus: 0 };
  const used = { cpus: 0, mem: 0, disk: 0, gpus: 0 };
  const offered = { cpus: 0, mem: 0, disk: 0, gpus: 0 };
  for (const a of agents.values()) {
    for (const k of Object.keys(total)) {
      total[k] += a.resources?.[k] || 0;
      used[k] += a.used_resources?.[k] || 0;
      offered[k] += a.offered_resources?.[k] || 0;
    }
  }
  const started = (t) => (t.statuses?.length ? t.statuses[0].timestamp : 0);
  tasks.sort((a, b) => started(b) - started(a));
  return { st, fws, agents, tasks, total, used, offered, roles: st.roles || [] };
}

const fwLink = (d, id) => h("a", { href: `#/frameworks/${enc(id)}` }, d.fws.get(id)?.name || id);
const short = (id) => String(id).split("-").pop(); // S0, 0001: the part after the cluster id
const agentLink = (d, id) => h("a", { href: `#/agents/${enc(id)}` },
  d.agents.has(id) ? `${d.agents.get(id).hostname} (${short(id)})` : id);
const taskLink = (t) => h("a", { href: `#/tasks/${enc(t.framework_id)}/${enc(t.id)}` }, t.id);
const res = (r) => `${fmtNum(r?.cpus || 0)} cpus · ${fmtMem(r?.mem || 0)}`;
const isLive = (t) => !t.completed;
const roleLink = (name) => h("a", { href: `#/roles/${enc(name)}` }, name);

function card(label, value, extra) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value),
    extra || null);
}

function taskRows(d, list) {
  return list.map((t) => [taskLink(t), t.name || "", stateBadge(t.state), fwLink(d, t.framework_id),
    agentLink(d, t.slave_id), res(t.resources), fmtTime(t.statuses?.[0]?.timestamp)]);
}
const TASK_HEAD = ["Task", "Name", "State", "Framework", "Agent", "Resources", "Started"];

// ---- pages -----------------------------------------------------------------------------------------------------

function overview(d) {
  const running = d.tasks.filter((t) => t.state === "TASK_RUNNING").length;
  const active = d.tasks.filter(isLive).length;
  const connected = [...d.agents.values()].filter((a) => a.active).length;
  const fwActive = [...d.fws.values()].filter((f) => !f.gone).length;
  const share = (r) => {
    let m = 0;
    for (const k of ["cpus", "mem", "disk", "gpus"]) {
      if (d.total[k] > 0) m = Math.max(m, (r.allocated?.[k] || 0) / d.total[k]);
    }
    return m;
  };
  const quota = (q) => Object.entries(q || {}).map(([k, v]) => `${k}:${fmtNum(v)}`).join(" ") || "-";
  return [
    h("h1", {}, "Cluster"),
    h("div", { class: "cards" },
      card("Agents", `${connected} / ${d.agents.size}`, h("div", { class: "sub" }, "connected / registered")),
      card("Frameworks", String(fwActive), h("div", { class: "sub" }, `${d.fws.size - fwActive} completed`)),
      card("Tasks", `${running} running`, h("div", { class: "sub" }, `${active} active · ${d.tasks.length - active} ended`)),
      card("CPUs", `${fmtNum(d.used.cpus)} / ${fmtNum(d.total.cpus)}`, bar(d.used.cpus, d.total.cpus,
        `${fmtNum(d.used.cpus)} used · ${fmtNum(d.offered.cpus)} offered`)),
      card("Memory", `${fmtMem(d.used.mem)} / ${fmtMem(d.total.mem)}`, bar(d.used.mem, d.total.mem,
        `${fmtMem(d.used.mem)} used · ${fmtMem(d.offered.mem)} offered`)),
      card("Disk", `${fmtMem(d.used.disk)} / ${fmtMem(d.total.disk)}`, bar(d.used.disk, d.total.disk,
        `${fmtMem(d.used.disk)} used · ${fmtMem(d.offered.disk)} offered`))),
    h("h2", {}, "Roles"),
    table(["Role", "Weight", "Frameworks", "Allocated", "Offered", "Dominant share", "Quota guarantee",
      "Quota limit"],
    d.roles.map((r) => [roleLink(r.name), fmtNum(r.weight), String(r.frameworks?.length || 0),
      `${fmtNum(r.allocated?.cpus || 0)} cpus · ${fmtMem(r.allocated?.mem || 0)}`,
      `${fmtNum(r.offered?.cpus || 0)} cpus · ${fmtMem(r.offered?.mem || 0)}`,
      bar(share(r), 1, `${fmtNum(share(r) * 100, 1)} %`), quota(r.quota?.guarantee), quota(r.quota?.limit)]),
    "no roles yet"),
    h("h2", {}, "Agents"), agentsTable(d),
    h("h2", {}, "Frameworks"), frameworksTable(d),
    h("h2", {}, "Recent tasks"), table(TASK_HEAD, taskRows(d, d.tasks.slice(0, 10)), "no tasks"),
  ];
}

function agentsTable(d) {
  return table(["Agent", "Id", "Status", "CPUs", "Memory", "Tasks"],
    [...d.agents.values()].map((a) => [agentLink(d, a.id), h("code", {}, a.id),
      h("span", { class: `badge ${a.active ? "ok" : "bad"}` }, a.active ? "connected" : "disconnected"),
      bar(a.used_resources?.cpus || 0, a.resources?.cpus || 0),
      bar(a.used_resources?.mem || 0, a.resources?.mem || 0,
        `${fmtMem(a.used_resources?.mem)} / ${fmtMem(a.resources?.mem)}`),
      String(d.tasks.filter((t) => isLive(t) && t.slave_id === a.id).length)]), "no agents");
}

function frameworksTable(d) {
  return table(["Framework", "Id", "Role", "Status", "Active tasks", "Used"],
    [...d.fws.values()].map((f) => [fwLink(d, f.id), h("code", {}, f.id), (f.roles || [f.role]).join(", "),
      h("span", { class: `badge ${f.gone ? "muted" : f.connected ? "ok" : "warn"}` },
        f.gone ? "removed" : f.connected ? "connected" : "disconnected"),
      String((f.tasks || []).length), res(f.used_resources)]), "no frameworks");
}

function agentPage(d, id) {
  const a = d.agents.get(id);
  if (!a) return notHere("Agent", id);
  const [host] = String(a.pid || "").replace(/^slave\(1\)@/, "").split("/");
  return [
    h("h1", {}, "Agent ", h("span", { class: "id" }, `${a.hostname} (${short(a.id)})`)),
    h("dl", { class: "facts" },
      fact("Id", h("code", {}, a.id)), fact("Address", host),
      fact("Status", a.active ? "connected" : "disconnected"), fact("Registered", fmtTime(a.registered_time)),
      fact("Attributes", Object.entries(a.attributes || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "-")),
    h("h2", {}, "Resources"),
    table(["Resource", "Used", "Offered", "Total", ""], ["cpus", "mem", "disk", "gpus"].map((k) => [k,
      fmtNum(a.used_resources?.[k] || 0), fmtNum(a.offered_resources?.[k] || 0), fmtNum(a.resources?.[k] || 0),
      bar((a.used_resources?.[k] || 0) + (a.offered_resources?.[k] || 0), a.resources?.[k] || 0)])),
    Object.keys(a.reserved_resources || {}).length ? [h("h2", {}, "Reservations"),
      table(["Role", "Reserved"], Object.entries(a.reserved_resources).map(([r, v]) => [r, res(v)]))] : null,
    h("h2", {}, "Tasks"), table(TASK_HEAD, taskRows(d, d.tasks.filter((t) => t.slave_id === id)), "no tasks"),
  ];
}

function frameworkPage(d, id) {
  const f = d.fws.get(id);
  if (!f) return notHere("Framework", id);
  return [
    h("h1", {}, "Framework ", h("span", { class: "id" }, f.name)),
    h("dl", { class: "facts" },
      fact("Id", h("code", {}, f.id)), fact("User", f.user), fact("Roles", (f.roles || [f.role]).join(", ")),
      fact("Status", f.gone ? "removed" : f.connected ? (f.active ? "connected, active" : "connected") :
        "disconnected"),
      fact("Registered", fmtTime(f.registered_time)), fact("Principal", f.principal || "-"),
      fact("Used", res(f.used_resources)), fact("Offered", res(f.offered_resources))),
    whyPanel("framework", { framework_id: id }, `Why did framework ${f.name} get the offers it got?`),
    h("h2", {}, "Tasks"),
    table(TASK_HEAD, taskRows(d, d.tasks.filter((t) => t.framework_id === id)), "no tasks"),
    h("h2", {}, "Outstanding offers"),
    table(["Offer", "Agent", "Resources"], (f.offers || []).map((o) => [h("code", {}, o.id),
      agentLink(d, o.slave_id), res(o.resources)]), "no offers"),
  ];
}

function taskPage(d, fid, tid) {
  const t = d.tasks.find((x) => x.framework_id === fid && x.id === tid);
  const timeline = h("div", { class: "timeline-box" }, timelineView(fid, tid, t));
  if (!t) {
    return [notHere("Task", tid), h("h2", {}, "Timeline"), timeline];
  }
  const a = d.agents.get(t.slave_id);
  const agentAddr = a ? String(a.pid || "").replace(/^slave\(1\)@/, "") : null;
  return [
    h("h1", {}, "Task ", h("span", { class: "id" }, t.id), " ", stateBadge(t.state)),
    h("dl", { class: "facts" },
      fact("Name", t.name || "-"), fact("Framework", fwLink(d, t.framework_id)),
      fact("Agent", agentLink(d, t.slave_id)), fact("Resources", res(t.resources)),
      fact("Container", t.container?.docker?.image || t.container?.mesos?.image?.docker?.name || "default image"),
      t.labels ? fact("Labels", t.labels.map((l) => `${l.key}=${l.value}`).join(", ")) : null),
    h("h2", {}, "Timeline"), timeline,
    whyPanel("task", { framework_id: fid, task_id: tid }, `Why is task ${tid} where it is?`),
    h("h2", {}, "Status updates"),
    table(["State", "Time", "Healthy"], (t.statuses || []).map((s) => [stateBadge(s.state), fmtTime(s.timestamp),
      s.healthy === undefined ? "-" : String(s.healthy)]), "none yet"),
    h("h2", {}, "Logs"),
    h("p", { class: "muted" }, "The task's stdout and stderr are files in its sandbox on its agent, served by the ",
      "agent's own /files API (which this master cannot reach for you). Read them with ",
      h("code", {}, `drover task log ${t.id} --framework ${t.framework_id} --master ${location.host}`),
      agentAddr ? [" or find the sandbox directory in the agent's ",
        h("a", { href: `${location.protocol}//${agentAddr}/state`, rel: "noopener noreferrer" }, "/state"),
        "."] : "."),
  ];
}

// The task's steps: offered -> accepted -> starting -> running -> ended, each with its log index (a link that
// takes the scrubber there). From GET /api/drover/history/task (the audit's tasks query over this replica's store).
const timelines = new Map();

function timelineView(fid, tid, t) {
  const key = `${fid}\n${tid}`;
  const have = timelines.get(key);
  const seen = t ? (t.statuses || []).length : -1;
  if (!have || (cluster.live && have.seen !== seen && !have.loading)) {
    const entry = { loading: true, seen, data: have?.data, error: null };
    timelines.set(key, entry);
    getJSON(`/api/drover/history/task?framework_id=${enc(fid)}&task_id=${enc(tid)}`)
      .then((data) => { entry.data = data; })
      .catch((e) => { entry.error = e.message; })
      .finally(() => { entry.loading = false; render(); });
  }
  const cur = timelines.get(key);
  if (cur.error) return h("p", { class: "error" }, `Timeline unavailable: ${cur.error}`);
  if (!cur.data) return h("p", { class: "muted" }, "Loading the timeline…");
  const at = cluster.live ? Infinity : cluster.at;
  return h("ol", { class: "timeline" }, cur.data.steps.map((s) => h("li", {
    class: `step ${s.step} ${s.index > at ? "future" : "past"}`,
    title: s.detail || "",
  },
  h("div", { class: "dot" }),
  h("div", { class: "what" }, s.step),
  h("button", { type: "button", class: "index", onclick: () => travel(s.index),
    title: "show the cluster at this log index" }, `#${s.index}`),
  h("div", { class: "when" }, s.time ? s.time.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""),
  h("div", { class: "detail" }, s.detail || ""))));
}

function rolePage(d, name) {
  const r = d.roles.find((x) => x.name === name);
  if (!r) return notHere("Role", name);
  const q = (m) => Object.entries(m || {}).map(([k, v]) => `${k}:${fmtNum(v)}`).join(" ") || "-";
  return [
    h("h1", {}, "Role ", h("span", { class: "id" }, r.name)),
    h("dl", { class: "facts" },
      fact("Weight", fmtNum(r.weight)), fact("Allocated", q(r.allocated)), fact("Offered", q(r.offered)),
      fact("Reserved", q(r.reserved)), fact("Quota guarantee", q(r.quota?.guarantee)),
      fact("Quota limit", q(r.quota?.limit)), fact("Quota consumed", q(r.quota?.consumed))),
    whyPanel("role", { role: name }, `Why did role ${name} get the offers it got?`),
    h("h2", {}, "Frameworks"),
    table(["Framework", "Id"], (r.frameworks || []).map((id) => [fwLink(d, id), h("code", {}, id)]), "none"),
  ];
}

function tasksPage(d) {
  return [h("h1", {}, "Tasks"),
    h("h2", {}, "Active"), table(TASK_HEAD, taskRows(d, d.tasks.filter(isLive)), "no active tasks"),
    h("h2", {}, "Completed"), table(TASK_HEAD, taskRows(d, d.tasks.filter((t) => !isLive(t))), "none")];
}

// ---- the allocation chart ----------------------------------------------------------------------------------------

const alloc = { by: "role", resource: "cpus", span: "whole log", data: null, key: "", fetchedAt: 0, last: 0,
  loading: false, error: null };
const SPANS = ["whole log", "last 200 events", "200 events around the index shown"];

// The indexes the chart covers: every event (sampled), or 200 of them, one sample each.
function allocRange() {
  const end = cluster.live ? cluster.last : cluster.at;
  if (alloc.span === "whole log" || cluster.last < 1) return "";
  const [lo, hi] = alloc.span === "last 200 events" ? [cluster.last - 199, cluster.last] : [end - 100, end + 99];
  return `&from=${Math.max(cluster.first, lo)}&to=${Math.max(cluster.first, Math.min(cluster.last, hi))}`;
}

function allocationPage() {
  const range = allocRange();
  // Live, the chart is fetched again when the log has grown (at most every 5 s); in the past, when its range moves.
  const key = `${alloc.by}/${alloc.resource}/${alloc.span}${cluster.live ? "" : range}`;
  const stale = alloc.key !== key || (cluster.last !== alloc.last && Date.now() - alloc.fetchedAt > 5000);
  if (stale && !alloc.loading) {
    alloc.loading = true;
    const want = { key, last: cluster.last };
    getJSON(`/api/drover/history/allocation?by=${alloc.by}&resource=${alloc.resource}&points=200${range}`)
      .then((data) => { alloc.data = data; alloc.error = null; })
      .catch((e) => { alloc.error = e.message; })
      .finally(() => { Object.assign(alloc, want, { loading: false, fetchedAt: Date.now() }); render(); });
  }
  const select = (name, options) => {
    const el = h("select", { id: `alloc-${name}`, onchange: (e) => { alloc[name] = e.target.value; render(); } },
      options.map((o) => h("option", { value: o, selected: alloc[name] === o }, o)));
    return h("label", {}, `${name} `, el);
  };
  return [
    h("h1", {}, "Allocation over time"),
    h("p", { class: "muted" }, "What tasks held, per ", alloc.by, ", at up to 200 log indexes of this replica's ",
      "store; the line is the agents' total, grey what was on offer. Click the chart to travel to that index."),
    h("div", { class: "controls" }, select("by", ["role", "framework"]),
      select("resource", ["cpus", "mem", "disk", "gpus"]), select("span", SPANS)),
    alloc.error ? h("p", { class: "error" }, `Chart unavailable: ${alloc.error}`) :
      !alloc.data || alloc.key !== key ?
        h("p", { class: "muted" }, "Loading…") :
        allocationChart(alloc.data, { marker: cluster.live ? null : cluster.at, onPick: travel }),
  ];
}

// ---- the why panel: GET /api/drover/why/{task,framework,role} ------------------------------------------------------

const whys = new Map();

function whyPanel(kind, params, label) {
  const q = new URLSearchParams(params);
  if (!cluster.live) q.set("index", String(cluster.at));
  const url = `/api/drover/why/${kind}?${q}`;
  const box = h("section", { class: "why", "data-kind": kind });
  const got = whys.get(url);
  const ask = () => {
    whys.set(url, { loading: true });
    render();
    fetch(url, { cache: "no-store" }).then(async (r) => {
      const text = await r.text();
      if (!r.ok) whys.set(url, { error: `${r.status} ${r.statusText}: ${text.trim() || "(no text)"}` });
      else whys.set(url, { data: JSON.parse(text) });
    }).catch((e) => whys.set(url, { error: e.message })).finally(render);
  };
  box.append(h("div", { class: "why-head" }, h("h2", {}, "Why?"),
    h("button", { type: "button", class: "why-btn", onclick: ask }, got ? "Ask again" : label)));
  if (!got) return box;
  if (got.loading) box.append(h("p", { class: "muted" }, "Asking…"));
  else if (got.error) box.append(h("p", { class: "error why-error" }, `The why endpoint answered ${got.error}`));
  else {
    const { question, index, answer, reasons, changes, ...rest } = got.data;
    box.append(h("div", { class: "why-body" },
      h("p", { class: "question" }, question || "", index ? ` (at log index ${index})` : ""),
      h("p", { class: "answer" }, answer || ""),
      // A role's answer mixes the reasons of several frameworks, and each reason is about the next run or the
      // window: show both, as `drover why` does (WHEN, FRAMEWORK), or same-looking rows cannot be told apart.
      table(["When", "Framework", "Reason", "Detail", "Runs"], (reasons || []).map((r) => [r.when || "",
        r.framework_id ? short(r.framework_id) : "", r.reason, r.detail || "",
        r.count === null || r.count === undefined ? "-" : String(r.count)]), "no reasons given"),
      changes?.length ? [h("h3", {}, "What would change it"), h("ul", {}, changes.map((c) => h("li", {}, c)))] : null,
      h("details", {}, h("summary", {}, "Everything the endpoint answered"),
        h("pre", {}, JSON.stringify(rest, null, 2)))));
  }
  return box;
}

// ---- shell: routing, the scrubber, live updates ---------------------------------------------------------------------

function fact(k, v) {
  return [h("dt", {}, k), h("dd", {}, v)];
}

function notHere(what, id) {
  const when = cluster.live ? "in the current state" : `at log index ${cluster.at}`;
  return h("div", { class: "notice" }, h("h1", {}, what, " ", h("span", { class: "id" }, id)),
    h("p", {}, `No such ${what.toLowerCase()} ${when}.`));
}

function parseHash() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

function page(d, parts) {
  const [p, a, b] = parts;
  if (!p) return overview(d);
  if (p === "agents") return a ? agentPage(d, a) : [h("h1", {}, "Agents"), agentsTable(d)];
  if (p === "frameworks") return a ? frameworkPage(d, a) : [h("h1", {}, "Frameworks"), frameworksTable(d)];
  if (p === "tasks") return a && b ? taskPage(d, a, b) : tasksPage(d);
  if (p === "allocation") return allocationPage();
  if (p === "roles" && a) return rolePage(d, a);
  return h("p", {}, "No such page.");
}

function render() {
  const { parts } = parseHash();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", a.dataset.page === (parts[0] || ""));
  }
  const banner = $("banner");
  banner.hidden = !cluster.error;
  banner.textContent = cluster.error || "";
  $("source").textContent = cluster.source;
  document.body.classList.toggle("past", !cluster.live);
  if (!cluster.state) return;
  const openDetails = [...view.querySelectorAll("details[open]")].length > 0;
  const body = h("div", { class: "page", "data-index": String(cluster.stateIndex) },
    page(digest(cluster.state), parts));
  if (openDetails) for (const d of body.querySelectorAll("details")) d.open = true;
  const y = window.scrollY;
  clear(view).append(body);
  window.scrollTo(0, y);
}

function showTick() {
  const scrub = $("scrub");
  scrub.min = String(cluster.first);
  scrub.max = String(Math.max(cluster.last, cluster.first));
  if (document.activeElement !== scrub) scrub.value = String(cluster.live ? cluster.last : cluster.at);
  $("goto").max = String(cluster.last);
  const conn = $("conn");
  if (!cluster.live) {
    conn.className = "conn past";
    conn.textContent = `time travel · index ${cluster.at} of ${cluster.last}`;
  } else if (cluster.connected) {
    conn.className = "conn live";
    conn.textContent = `● live · index ${cluster.last}`;
  } else if (cluster.polling) {
    conn.className = "conn live";
    conn.textContent = "● live · refreshed every 5 s";
  } else {
    conn.className = "conn down";
    conn.textContent = "○ reconnecting…";
  }
  // A principal that may not read the whole log gets 403s from the event stream and the history: it cannot time
  // travel, and the page is not following the stream. Say so instead of a scrubber stuck at index 1.
  $("scrub").disabled = $("goto").disabled = Boolean(cluster.polling);
  $("at").textContent = cluster.polling ? "time travel needs a principal that may view every framework and task" :
    cluster.live ? "following the event stream" : `the cluster as it was at log index ${cluster.at}`;
  if (cluster.live && document.activeElement !== $("goto")) $("goto").value = "";
  $("live").disabled = cluster.live;
}

function setHashAt(index) {
  const [path] = location.hash.replace(/^#/, "").split("?");
  const url = index === null ? `#${path || "/"}` : `#${path || "/"}?at=${index}`;
  history.replaceState(null, "", url);
}

function travel(index) {
  const to = index === null || index >= cluster.last ? null : Math.max(cluster.first, index);
  setHashAt(to);
  cluster.travel(to);
}

let scrubTimer = null;
$("scrub").addEventListener("input", (e) => {
  const v = Number(e.target.value);
  $("at").textContent = `log index ${v}…`;
  clearTimeout(scrubTimer);
  scrubTimer = setTimeout(() => travel(v), 150);
});
$("goto").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && e.target.value) travel(Number(e.target.value));
});
$("live").addEventListener("click", () => travel(null));
window.addEventListener("hashchange", () => {
  // A link to another page keeps the index the pages show (only the Live button and the scrubber change it).
  const at = parseHash().params.get("at");
  if (at && /^\d+$/.test(at) && Number(at) !== cluster.at) cluster.travel(Number(at));
  else {
    if (!at && !cluster.live) setHashAt(cluster.at);
    render();
  }
});
cluster.addEventListener("tick", showTick);
cluster.addEventListener("change", () => { showTick(); render(); });

const initial = parseHash().params.get("at");
if (initial && /^\d+$/.test(initial)) cluster.at = Number(initial);
cluster.start();
