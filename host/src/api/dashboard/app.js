// The Durango dashboard: a page of three views (instances, one instance,
// apps) drawn from the host's own routes. Every value from the host is put
// in the page as text, never as markup. Live updates come as server-sent
// events from /dashboard/api/events; a view redraws when a change concerns
// what it shows.
"use strict";

const PREFIX = "/runtime/webhooks/durabletask";
const PAGE_SIZE = 25;
const main = document.getElementById("main");

// ---- talking to the host -------------------------------------------------

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  init.headers = { ...(options.headers || {}) };
  if (init.method && init.method !== "GET") {
    // Without it the host refuses a change made with the session cookie.
    init.headers["x-durango-dashboard"] = "1";
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    location.href = "/dashboard";
    throw new Error("signed out");
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return { body, headers: response.headers, status: response.status };
}

// ---- small helpers -------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    // Through the CSS object model: the page's policy refuses style attributes.
    else if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(message, bad = false) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 4000);
}

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function ago(ms) {
  const span = el("span", { class: "ago", "data-t": ms, title: time(ms) });
  span.textContent = relative(ms);
  return span;
}

function relative(ms) {
  const seconds = Math.round((Date.now() - ms) / 1000);
  const words = (s) => {
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  };
  return seconds >= 0 ? `${words(seconds)} ago` : `in ${words(-seconds)}`;
}

// Relative times stay true without redrawing the view.
setInterval(() => {
  for (const span of document.querySelectorAll(".ago")) {
    span.textContent = relative(Number(span.dataset.t));
  }
}, 1000);

function pretty(value) {
  return value === null || value === undefined ? "null" : JSON.stringify(value, null, 2);
}

function statusBadge(status, id) {
  return el("span", { class: `status ${status}`, id }, status);
}

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

// ---- live updates --------------------------------------------------------

let view = null; // { onChange(change), refresh() }

function follow() {
  const live = document.getElementById("live");
  const source = new EventSource("/dashboard/api/events");
  source.onopen = () => { live.textContent = "● live"; live.className = "on"; };
  source.onerror = () => { live.textContent = "○ reconnecting"; live.className = ""; };
  source.addEventListener("changed", (e) => {
    if (view && view.onChange) view.onChange(JSON.parse(e.data));
  });
  source.addEventListener("resync", () => { if (view) view.refresh(); });
}

// ---- routing -------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/instances";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", hash.startsWith(link.getAttribute("href").slice(1)));
  }
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "instances" && parts.length > 1) {
    view = instanceView(decodeURIComponent(parts.slice(1).join("/")));
  } else if (parts[0] === "apps") {
    view = appsView();
  } else {
    view = listView(params);
  }
  view.refresh();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => { follow(); route(); });

// ---- instances -----------------------------------------------------------

const STATUSES = ["Pending", "Running", "Suspended", "ContinuedAsNew", "Completed", "Failed", "Terminated"];

function listView(params) {
  const filters = {
    status: params.get("status") || "",
    name: params.get("name") || "",
    from: params.get("from") || "",
    to: params.get("to") || "",
    prefix: params.get("prefix") || "",
  };
  const pages = [null]; // continuation tokens; pages[i] starts page i
  let page = 0;
  let shown = new Set();

  const setFilters = (changes) => {
    const next = { ...filters, ...changes };
    const query = new URLSearchParams(Object.entries(next).filter(([, v]) => v));
    location.hash = `#/instances?${query}`;
  };

  const counts = el("div", { class: "counts", id: "counts" });
  const table = el("tbody");
  const pager = el("div", { class: "pager" });
  const nameSelect = el("select", { id: "filter-name" }, el("option", { value: "" }, "any"));
  const form = el("form", {
    class: "filters",
    onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(form);
      setFilters(Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v).trim()])));
    },
  },
    el("label", {}, "Status", el("select", { name: "status", id: "filter-status" },
      el("option", { value: "" }, "any"),
      STATUSES.map((s) => el("option", { value: s, selected: s === filters.status }, s)))),
    el("label", {}, "Orchestrator", Object.assign(nameSelect, { name: "name" })),
    el("label", {}, "Created from", el("input", { type: "datetime-local", name: "from", value: filters.from })),
    el("label", {}, "Created to", el("input", { type: "datetime-local", name: "to", value: filters.to })),
    el("label", {}, "Id starts with", el("input", { name: "prefix", id: "filter-prefix", value: filters.prefix })),
    el("button", { type: "submit", class: "primary" }, "Filter"),
    el("button", { type: "button", onclick: () => setFilters({ status: "", name: "", from: "", to: "", prefix: "" }) }, "Clear"));

  main.replaceChildren(
    el("h1", {}, "Instances"),
    counts,
    form,
    el("table", { id: "instances-table" },
      el("thead", {}, el("tr", {}, ["Instance", "Orchestrator", "Status", "Waiting for", "Created", "Updated", "Custom status"].map((h) => el("th", {}, h)))),
      table),
    pager);

  async function loadSummary() {
    const { body } = await api("/dashboard/api/summary");
    counts.replaceChildren(...STATUSES.map((s) => el("div", {
      class: "count" + (filters.status === s ? " selected" : ""),
      id: `count-${s}`,
      onclick: () => setFilters({ status: filters.status === s ? "" : s }),
    }, el("b", {}, body.counts[s] ?? 0), s)));
    if (nameSelect.options.length === 1) {
      for (const name of body.orchestrators) {
        nameSelect.append(el("option", { value: name, selected: name === filters.name }, name));
      }
      if (filters.name && nameSelect.value !== filters.name) {
        nameSelect.append(el("option", { value: filters.name, selected: true }, filters.name));
      }
    }
  }

  async function loadPage() {
    const query = new URLSearchParams({ top: PAGE_SIZE, showInput: "false", newestFirst: "true" });
    if (filters.status) query.set("runtimeStatus", filters.status);
    if (filters.name) query.set("name", filters.name);
    if (filters.prefix) query.set("instanceIdPrefix", filters.prefix);
    if (filters.from) query.set("createdTimeFrom", new Date(filters.from).toISOString().slice(0, 19) + "Z");
    if (filters.to) query.set("createdTimeTo", new Date(filters.to).toISOString().slice(0, 19) + "Z");
    const headers = pages[page] ? { "x-ms-continuation-token": pages[page] } : {};
    const { body, headers: answer } = await api(`${PREFIX}/instances?${query}`, { headers });
    pages[page + 1] = answer.get("x-ms-continuation-token");
    shown = new Set(body.map((i) => i.instanceId));
    const unfinished = body.filter((i) => !["Completed", "Failed", "Terminated"].includes(i.runtimeStatus));
    const ids = new URLSearchParams(unfinished.map((i) => ["id", i.instanceId]));
    const waits = unfinished.length ? (await api(`/dashboard/api/waiting?${ids}`)).body : {};
    table.replaceChildren(...body.map((i) => el("tr", { "data-id": i.instanceId },
      el("td", { class: "mono" }, el("a", { href: `#/instances/${encodeURIComponent(i.instanceId)}` }, i.instanceId)),
      el("td", {}, i.name),
      el("td", {}, statusBadge(i.runtimeStatus)),
      el("td", { class: "waits" }, (waits[i.instanceId] || []).map(waitWords).reduce((acc, w) => acc.concat(acc.length ? [el("br"), w] : [w]), [])),
      el("td", {}, i.createdTime),
      el("td", {}, i.lastUpdatedTime),
      el("td", { class: "mono" }, i.customStatus === null || i.customStatus === undefined ? "" : JSON.stringify(i.customStatus)))));
    if (!body.length) table.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No instances match.")));
    pager.replaceChildren(
      el("button", { disabled: page === 0, onclick: () => { page -= 1; loadPage(); } }, "‹ Previous"),
      el("span", { class: "muted" }, `page ${page + 1}`),
      el("button", { disabled: !pages[page + 1], onclick: () => { page += 1; loadPage(); } }, "Next ›"));
  }

  const refresh = async () => {
    try { await Promise.all([loadSummary(), loadPage()]); } catch (e) { toast(e.message, true); }
  };
  const later = debounce(refresh, 300);
  return {
    refresh,
    // Any change may move counts; a new instance or a changed status may
    // change the page.
    onChange: (change) => { if (change.status || shown.has(change.id)) later(); },
  };
}

// ---- what an instance waits for ------------------------------------------

// One open step in words: what, and since when.
function waitWords(w) {
  let what;
  switch (w.step) {
    case "event": what = [el("span", { class: "what" }, `event ${w.name}`)]; break;
    case "timer": what = [el("span", { class: "what" }, "timer"), " due ", ago(w.fireAt), ` (${time(w.fireAt)})`]; break;
    case "activity": {
      what = [el("span", { class: "what" }, `activity ${w.name}`)];
      if (w.attemptsMade) what.push(` — attempt ${w.attemptsMade + 1}`, w.nextAttemptAt > Date.now() ? [", retry ", ago(w.nextAttemptAt)] : " running");
      else what.push(" — running");
      break;
    }
    case "subOrchestration": what = [el("span", { class: "what" }, `sub-orchestration ${w.name} `),
      el("a", { href: `#/instances/${encodeURIComponent(w.instanceId)}` }, w.instanceId)]; break;
    case "resume": what = [el("span", { class: "what" }, "resume"), " (suspended)"]; break;
    case "start": what = [el("span", { class: "what" }, "its first episode")]; break;
    default: what = [w.step];
  }
  return el("span", {}, ...what, el("span", { class: "muted" }, " — since ", ago(w.since)));
}

// ---- one instance --------------------------------------------------------

function instanceView(id) {
  const path = `${PREFIX}/instances/${encodeURIComponent(id)}`;
  // The actions card is kept across live redraws while what it offers is
  // the same, so what a person is typing there keeps its place and focus.
  let kept = { key: null, card: null };

  async function act(label, request, after) {
    if (!confirm(`${label} instance ${id}?`)) return;
    try {
      const answer = await request();
      toast(`${label}: done`);
      if (after) after(answer);
      else refresh();
    } catch (e) {
      toast(`${label}: ${e.message}`, true);
    }
  }

  function reason() {
    const given = document.getElementById("action-reason").value.trim();
    return given || "from the dashboard";
  }

  function actions(data) {
    const terminal = ["Completed", "Failed", "Terminated"].includes(data.status);
    const waits = data.waiting.filter((w) => w.step === "event").map((w) => w.name);
    const name = el("input", { id: "raise-name", list: "raise-names", placeholder: "event name", value: waits[0] || "" });
    const body = el("textarea", { id: "raise-data", rows: 3, placeholder: "JSON data, e.g. 1234 or {\"ok\": true}" });
    const q = (r) => `?reason=${encodeURIComponent(r)}`;
    return el("div", { class: "card" },
      el("h2", {}, "Actions"),
      el("div", { class: "actions" },
        el("input", { id: "action-reason", placeholder: "reason (optional)" }),
        el("button", { id: "terminate-button", class: "danger", disabled: terminal,
          onclick: () => act("Terminate", () => api(`${path}/terminate${q(reason())}`, { method: "POST" })) }, "Terminate"),
        el("button", { id: "suspend-button", disabled: terminal || data.status === "Suspended",
          onclick: () => act("Suspend", () => api(`${path}/suspend${q(reason())}`, { method: "POST" })) }, "Suspend"),
        el("button", { id: "resume-button", disabled: data.status !== "Suspended",
          onclick: () => act("Resume", () => api(`${path}/resume${q(reason())}`, { method: "POST" })) }, "Resume"),
        el("button", { id: "restart-button",
          onclick: () => act("Restart", () => api(`${path}/restart`, { method: "POST" }),
            (answer) => { location.hash = `#/instances/${encodeURIComponent(answer.body.id)}`; }) }, "Restart"),
        el("button", { id: "rewind-button", disabled: data.status !== "Failed",
          onclick: () => act("Rewind", () => api(`${path}/rewind${q(reason())}`, { method: "POST" })) }, "Rewind"),
        el("button", { id: "purge-button", class: "danger", disabled: !terminal,
          onclick: () => act("Purge", () => api(path, { method: "DELETE" }),
            () => { location.hash = "#/instances"; }) }, "Purge")),
      el("div", { class: "raise" },
        el("strong", {}, "Raise an event"),
        name, el("datalist", { id: "raise-names" }, waits.map((w) => el("option", { value: w }))),
        body,
        el("div", {}, el("button", { id: "raise-button", class: "primary", disabled: terminal, onclick: () => {
          const event = name.value.trim();
          const text = body.value.trim() || "null";
          if (!event) { toast("Name the event to raise.", true); return; }
          try { JSON.parse(text); } catch { toast("The event data is not valid JSON.", true); return; }
          act(`Raise ${event} on`, () => api(`${path}/raiseEvent/${encodeURIComponent(event)}`, {
            method: "POST", headers: { "content-type": "application/json" }, body: text }));
        } }, "Raise"))));
  }

  function waitingCard(data) {
    const terminal = ["Completed", "Failed", "Terminated"].includes(data.status);
    const items = data.waiting.map((w) => el("li", { "data-step": w.step, "data-name": w.name }, waitWords(w)));
    return el("div", { class: "card" },
      el("h2", {}, "Waiting for"),
      items.length ? el("ul", { class: "waiting", id: "waiting" }, items)
        : el("p", { class: "muted", id: "waiting" }, terminal ? `Nothing: it is ${data.status.toLowerCase()}.` : "Nothing right now: an episode is running."));
  }

  function timelineCard(data) {
    const terminal = ["Completed", "Failed", "Terminated"].includes(data.status);
    // From the start to now (or the end): an open step's bar runs to the
    // right edge; a timer's due time is in words beside it.
    const start = data.createdAt;
    const end = terminal ? data.updatedAt : data.now;
    const span = Math.max(end - start, 1);
    const x = (t) => `${Math.min(100, Math.max(0, ((t - start) / span) * 100))}%`;
    const rows = data.timeline.map((e) => {
      let label; let mark; let when;
      if (e.kind === "step") {
        const ended = e.ended;
        // A step still open when the instance ended was never answered.
        const state = ended ? ended.outcome : terminal ? "cancelled" : "open";
        const stop = ended ? ended.at : end;
        const icon = { activity: "▶", timer: "◷", event: "✉", subOrchestration: "↳" }[e.step];
        label = [el("span", { class: "kind" }, icon),
          e.step === "timer" ? `timer #${e.seq}` : e.step === "event" ? `wait ${e.name}` : e.name];
        if (e.step === "subOrchestration") label.push(" ", el("a", { href: `#/instances/${encodeURIComponent(e.instanceId)}` }, "open"));
        mark = el("div", { class: `bar ${e.step} ${state}`, style: { left: x(e.at), width: `calc(${x(stop)} - ${x(e.at)})` },
          title: `${time(e.at)} → ${ended ? time(ended.at) : "…"}` });
        const attempts = ended && ended.attempts > 1 ? ` after ${ended.attempts} attempts` : "";
        when = ended ? `${ended.outcome}${attempts} ${time(ended.at)}`
          : terminal ? "never answered"
          : e.step === "timer" ? `due ${time(e.fireAt)}` : `open since ${time(e.at)}`;
        if (ended && ended.error) when += ` — ${ended.error}`;
      } else if (e.kind === "eventRaised") {
        label = [el("span", { class: "kind" }, "↯"), `event ${e.name}`, el("span", { class: "muted" }, ` (${e.sender})`)];
        mark = el("div", { class: "dot", style: { left: x(e.at) } });
        when = time(e.at);
      } else if (e.kind === "started") {
        label = [el("span", { class: "kind" }, "●"), e.firstSeq > 0 ? `continued as new (from step ${e.firstSeq})` : `started ${e.name}`];
        mark = el("div", { class: "dot lifecycle", style: { left: x(e.at) } });
        when = time(e.at);
      } else {
        label = [el("span", { class: "kind" }, "■"), e.what + (e.detail ? `: ${e.detail}` : "")];
        mark = el("div", { class: "dot lifecycle", style: { left: x(e.at) } });
        when = time(e.at);
      }
      return el("div", { class: "row", "data-kind": e.kind, "data-step": e.step, "data-name": e.name },
        el("div", { class: "label" }, ...label), el("div", { class: "lane" }, mark), el("div", { class: "when" }, when));
    });
    return el("div", { class: "card" }, el("h2", {}, "Timeline"),
      el("div", { class: "timeline", id: "timeline" }, rows.length ? rows : el("p", { class: "muted" }, "No history yet.")));
  }

  function draw(data) {
    const key = `${data.status}|${data.waiting.map((w) => w.name).join(",")}`;
    if (kept.key !== key) kept = { key, card: actions(data) };
    main.replaceChildren(
      el("p", {}, el("a", { href: "#/instances" }, "‹ Instances")),
      el("h1", {}, el("span", { class: "mono", id: "instance-id" }, data.id), " ", statusBadge(data.status, "instance-status")),
      el("div", { class: "grid" },
        el("div", { class: "card" }, el("dl", { class: "facts" },
          el("dt", {}, "Orchestrator"), el("dd", {}, data.name),
          el("dt", {}, "App"), el("dd", {}, data.app || "—"),
          el("dt", {}, "Pinned version"), el("dd", { class: "mono", id: "instance-version", title: data.version }, data.version.slice(0, 12)),
          el("dt", {}, "Created"), el("dd", {}, time(data.createdAt), " (", ago(data.createdAt), ")"),
          el("dt", {}, "Updated"), el("dd", {}, time(data.updatedAt), " (", ago(data.updatedAt), ")"))),
        waitingCard(data)),
      kept.card,
      el("div", { class: "grid" },
        el("div", { class: "card" }, el("h2", {}, "Input"), el("pre", { id: "instance-input" }, pretty(data.input))),
        el("div", { class: "card" }, el("h2", {}, "Output"), el("pre", { id: "instance-output" }, pretty(data.output))),
        el("div", { class: "card" }, el("h2", {}, "Custom status"), el("pre", { id: "instance-custom-status" }, pretty(data.customStatus)))),
      timelineCard(data));
  }

  async function refresh() {
    try {
      const { body } = await api(`/dashboard/api/instances/${encodeURIComponent(id)}`);
      const focused = document.activeElement;
      draw(body);
      if (focused && kept.card.contains(focused)) focused.focus();
    } catch (e) {
      main.replaceChildren(el("p", {}, el("a", { href: "#/instances" }, "‹ Instances")), el("p", { class: "error" }, e.message));
    }
  }
  const later = debounce(refresh, 150);
  return { refresh, onChange: (change) => { if (change.id === id) later(); } };
}

// ---- apps ----------------------------------------------------------------

function appsView() {
  async function deploy(e) {
    e.preventDefault();
    const name = document.getElementById("deploy-name").value.trim();
    const file = document.getElementById("deploy-file").files[0];
    if (!file) { toast("Choose a .wasm component to deploy.", true); return; }
    const app = name || file.name.replace(/\.wasm$/, "");
    if (!confirm(`Deploy ${file.name} as app ${app}?`)) return;
    try {
      const { body } = await api(`/admin/apps/${encodeURIComponent(app)}`, {
        method: "PUT", headers: { "content-type": "application/wasm" }, body: file });
      toast(`Deployed ${body.app} ${body.version.slice(0, 12)}`);
      refresh();
    } catch (err) {
      toast(`Deploy: ${err.message}`, true);
    }
  }

  async function refresh() {
    try {
      const { body: apps } = await api("/admin/apps");
      const versions = await Promise.all(apps.map((a) => api(`/admin/apps/${encodeURIComponent(a.app)}/versions`).then((r) => r.body)));
      main.replaceChildren(
        el("h1", {}, "Apps"),
        el("form", { class: "card filters", onsubmit: deploy },
          el("label", {}, "App name (default: the file's name)", el("input", { id: "deploy-name" })),
          el("label", {}, "Component (.wasm)", el("input", { id: "deploy-file", type: "file", accept: ".wasm" })),
          el("button", { type: "submit", class: "primary" }, "Deploy")),
        ...(apps.length ? apps.map((a, i) => el("div", { class: "card", "data-app": a.app },
          el("h2", {}, a.app, " ", el("span", { class: "mono muted" }, a.version.slice(0, 12))),
          el("p", {}, a.functions.map((f) => el("span", { class: "status", title: f.kind }, `${f.name} · ${f.kind}`)).reduce((acc, n) => acc.concat(n, " "), [])),
          el("table", {},
            el("thead", {}, el("tr", {}, ["Version", "Deployed", "Unfinished instances", ""].map((h) => el("th", {}, h)))),
            el("tbody", {}, versions[i].map((v) => el("tr", {},
              el("td", { class: "mono", title: v.version }, v.version.slice(0, 12)),
              el("td", {}, v.deployedTime),
              el("td", {}, v.unfinished),
              el("td", {}, v.current ? "current" : "")))))))
          : [el("p", { class: "muted" }, "No app is deployed.")]));
    } catch (e) {
      toast(e.message, true);
    }
  }
  return { refresh, onChange: null };
}
