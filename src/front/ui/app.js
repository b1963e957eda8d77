// modeld's live view: polls /ui/state once a second and draws it. No library, nothing
// fetched from elsewhere. The token, when the daemon asks for one, stays in this tab
// (sessionStorage) and goes only to this daemon.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "modeld-token";
const COLOURS = ["#8250df", "#0969da", "#bc4c00", "#1a7f37", "#cf222e", "#6e7781"];
const DASHES = ["", "6 3", "2 2", "8 3 2 3", "4 4", "1 3"];

const view = {
  since: null,        // the time of the newest chart point received
  keep: 600,          // seconds of points kept, as the daemon says
  series: new Map(),  // "model/version" -> points
  parts: new Map(),   // "model/part" -> the JSON last drawn, to redraw only what changed
  spoken: new Map(),  // model -> what was last announced
  failures: 0,
};

// --- building elements (text is always text: nothing from the daemon is parsed as HTML)

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined && v !== "") el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(caption, headers, rows) {
  return h("div", { class: "scroll" },
    h("table", {},
      h("caption", { text: caption }),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", text: x })))),
      h("tbody", {}, rows)));
}

// --- words

const pct = (f, digits = 2) => (f === null || f === undefined ? "–" : `${(f * 100).toFixed(digits)}%`);
const ms = (v) => (v === null || v === undefined ? "–" : v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`);

function seconds(total) {
  total = Math.max(0, Math.round(total));
  const m = Math.floor(total / 60);
  const sec = total % 60;
  return m > 0 ? `${m} min ${sec} s` : `${sec} s`;
}

function when(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : "–";
}

// A mark in words and a symbol, never colour alone.
function mark(ok) {
  if (ok === true) return h("span", { class: "mark ok" }, "✓ ok");
  if (ok === false) return h("span", { class: "mark fail" }, "✗ failing");
  return h("span", { class: "mark wait" }, "… not judged yet");
}

function statusMark(status) {
  const words = { ok: ["ok", "✓ ok"], warning: ["wait", "! warning"], critical: ["fail", "✗ critical"], insufficient_data: ["wait", "… too few requests"] };
  const [cls, text] = words[status] || ["wait", status];
  return h("span", { class: `mark ${cls}` }, text);
}

// --- fetching

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function poll() {
  const url = view.since === null ? "/ui/state" : `/ui/state?since=${view.since}`;
  try {
    const response = await fetch(url, { headers: headers(), cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      askForToken(response.status === 403 ? `This token may not read the live view: ${body.error || ""}` : token() ? "The daemon does not know this token." : "");
      return;
    }
    if (!response.ok) throw new Error(`the daemon answered ${response.status}`);
    const state = await response.json();
    view.failures = 0;
    connected(true);
    take(state);
  } catch (e) {
    view.failures += 1;
    connected(false, e.message);
  }
  setTimeout(poll, POLL_MS);
}

function connected(ok, why) {
  const el = document.getElementById("connection");
  el.classList.toggle("lost", !ok);
  el.textContent = ok ? `Live: updated ${new Date().toLocaleTimeString()}` : `Not updating: ${why} (retrying every second)`;
}

function askForToken(problem) {
  document.getElementById("connection").textContent = "Waiting for a token.";
  const form = document.getElementById("token-form");
  form.hidden = false;
  document.getElementById("token-error").textContent = problem;
  document.getElementById("token-input").focus();
}

function useToken(event) {
  event.preventDefault();
  const value = document.getElementById("token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  document.getElementById("token-form").hidden = true;
  view.since = null;
  poll();
}

// --- state

function take(state) {
  view.keep = state.keep_seconds || view.keep;
  const oldest = state.now - view.keep;
  for (const model of state.models) {
    for (const series of model.series) {
      const key = `${model.name}/${series.version}`;
      const points = (view.series.get(key) || []).concat(series.points).filter((p) => p.t >= oldest);
      view.series.set(key, points);
    }
  }
  for (const key of view.series.keys()) {
    const points = view.series.get(key).filter((p) => p.t >= oldest);
    if (points.length) view.series.set(key, points);
    else view.series.delete(key);
  }
  // Each second's points arrive together: the newest one received is where to go on from.
  for (const model of state.models) {
    for (const series of model.series) {
      for (const p of series.points) if (view.since === null || p.t > view.since) view.since = p.t;
    }
  }
  draw(state);
}

function draw(state) {
  const main = document.getElementById("models");
  const names = new Set(state.models.map((m) => m.name));
  for (const section of [...main.querySelectorAll("section.model")]) {
    if (!names.has(section.dataset.model)) section.remove();
  }
  if (!state.models.length && !main.querySelector(".empty")) {
    main.append(h("p", { class: "empty" }, "No model is configured, or this token may see none."));
  }
  for (const model of state.models) {
    let section = main.querySelector(`section.model[data-model="${CSS.escape(model.name)}"]`);
    if (!section) {
      const id = `model-${main.children.length}`;
      section = h("section", { class: "model", "data-model": model.name, "aria-labelledby": id },
        h("div", { class: "model-head" }, h("h2", { id, text: model.name }), h("span", { class: "ready" })),
        h("div", { class: "part versions" }),
        h("div", { class: "part rollout-part" }),
        h("div", { class: "part charts-part" }),
        h("div", { class: "part health" }),
        h("div", { class: "part history" }));
      main.querySelector(".empty")?.remove();
      main.append(section);
    }
    const now = state.now;
    part(section, model, "ready", { ready: model.ready, reason: model.reason }, drawReady);
    part(section, model, "versions", model.versions.map(({ checks, ...v }) => v), drawVersions);
    part(section, model, "rollout-part", { rollout: model.rollout, now: Math.floor(now) }, () => drawRollout(model, now));
    drawCharts(section.querySelector(".charts-part"), model, now);
    part(section, model, "health", model.versions, drawHealth);
    part(section, model, "history", model.history, drawHistory);
    announce(model);
  }
}

// Redraws one part of a model's section when what it shows changed.
function part(section, model, name, data, render) {
  const key = `${model.name}/${name}`;
  const json = JSON.stringify(data);
  if (view.parts.get(key) === json) return;
  view.parts.set(key, json);
  const el = section.querySelector(`.${name}`);
  const open = new Set([...el.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  el.replaceChildren(...[].concat(render(data, model) || []));
  for (const d of el.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
}

function drawReady(data) {
  return data.ready
    ? h("span", { class: "badge ok" }, "✓ ready")
    : h("span", { class: "badge fail" }, `✗ not ready${data.reason ? `: ${data.reason}` : ""}`);
}

function drawVersions(versions) {
  const rows = versions.map((v) =>
    h("tr", {},
      h("th", { scope: "row", text: `v${v.version}` }),
      h("td", { text: v.role }),
      h("td", {}, h("div", { class: "weight" },
        h("span", { class: "num", text: `${v.weight}%` }),
        h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: null, "data-w": v.weight })))),
      h("td", { text: v.state + (v.reason ? ` (${v.reason})` : "") }),
      h("td", { class: "num", text: `${v.workers_ready}/${v.workers}` }),
      h("td", { class: "num", text: v.restarts })));
  const t = table("Versions and traffic", ["Version", "Role", "Traffic", "State", "Workers ready", "Restarts"], rows);
  // Widths set through the DOM: the page's policy allows no inline style attribute.
  for (const bar of t.querySelectorAll("[data-w]")) bar.style.width = `${bar.dataset.w}%`;
  return t;
}

function drawRollout(model, now) {
  const r = model.rollout;
  if (!r) return h("p", { class: "muted" }, "No rollout yet since the daemon started.");
  const ended = ["promoted", "reverted", "failed"].includes(r.phase);
  const from = r.from === null || r.from === undefined ? "(none)" : `v${r.from}`;
  const box = h("div", { class: `rollout${ended ? ` ended-${r.phase}` : ""}`, "data-phase": r.phase },
    h("h3", {}, `Rollout #${r.id}: ${from} → v${r.to} (${r.strategy})`),
    h("p", { class: "phase" }, h("strong", {}, ended ? "Ended: " : "Now: "), describe(r)));
  if (r.phase === "reverted" || r.phase === "failed") {
    box.append(h("p", { class: "why", "data-reason": "" }, h("strong", {}, "Why: "), r.reason));
  }
  if (r.sources) {
    box.append(h("p", {}, `The new version answered ${r.sources.live} live requests, ${r.sources.mirrored} mirrored and ${r.sources.replayed} replayed.`));
  }
  if (!ended && r.gate) box.append(...drawGate(r.gate, now));
  if (ended) box.append(h("p", {}, h("a", { href: `/ui/report/${encodeURIComponent(r.model)}/${r.id}`, "data-report": "" }, `Report of rollout #${r.id}`)));
  return box;
}

function describe(r) {
  switch (r.phase) {
    case "spawning": return "starting the new version's workers (load, warm-up, golden examples, signature check)";
    case "validating": return "answering the validation set beside the live version (no user traffic)";
    case "shadow": return "shadow: answering a copy of live traffic, compared with the live version's answers (no user traffic)";
    case "gating": return `step ${r.step} of ${r.steps}: ${r.weight}% of traffic on v${r.to}, the gate watching`;
    case "paused": return `paused at step ${r.step} of ${r.steps} (${r.weight}% of traffic): ${r.reason}`;
    case "awaiting_decision": return `A/B test done (${r.weight}% on v${r.to}): waiting for modeld promote or rollback`;
    case "draining": return "draining the old workers";
    case "promoted": return `promoted: v${r.to} serves all traffic`;
    case "reverted": return "reverted: the old version serves all traffic";
    case "failed": return "failed before any user traffic reached the new version";
    default: return r.phase;
  }
}

function drawGate(gate, now) {
  const daemonNow = now;
  const since = Math.max(0, daemonNow - gate.at);
  const left = gate.hold_seconds === undefined || gate.hold_seconds === null ? null : Math.max(0, gate.hold_seconds - gate.held_seconds - since);
  const verdicts = { pass: ["ok", "✓ passing"], fail: ["fail", "✗ failing"], inconclusive: ["wait", "… inconclusive"] };
  const [cls, words] = verdicts[gate.verdict] || ["wait", gate.verdict];
  const out = [
    h("p", { class: "verdict" }, h("strong", {}, "Gate: "), h("span", { class: `mark ${cls}`, "data-verdict": gate.verdict }, words),
      left === null ? ` — held ${seconds(gate.held_seconds + since)}, until an operator decides` : ` — ${seconds(left)} left of this phase's ${seconds(gate.hold_seconds)}`),
  ];
  if (gate.reason && gate.verdict === "inconclusive") out.push(h("p", { class: "why" }, h("strong", {}, "Waiting for: "), gate.reason));
  if (gate.reason && gate.verdict === "fail") out.push(h("p", { class: "why" }, h("strong", {}, "Breach: "), gate.reason));
  const rows = gate.checks.map((c) =>
    h("tr", {}, h("th", { scope: "row", text: c.name }), h("td", { class: "num", text: c.value }), h("td", { text: c.threshold || "–" }), h("td", {}, mark(c.ok))));
  out.push(table("The gate's checks, last evaluation", ["Check", "Value", "Held to", "Verdict"], rows));
  return out;
}

function drawHealth(versions) {
  return versions.map((v) =>
    h("details", { "data-key": `v${v.version}-${v.role}` },
      h("summary", {}, `Health checks of v${v.version} (${v.role}): `, worst(v.checks)),
      table(`Health checks of v${v.version}`, ["Check", "Status", "Value", "Threshold"],
        v.checks.map((c) => h("tr", {}, h("th", { scope: "row", text: c.name }), h("td", {}, statusMark(c.status)), h("td", { text: c.value || "–" }), h("td", { text: c.threshold || "–" }))))));
}

function worst(checks) {
  const order = ["ok", "insufficient_data", "warning", "critical"];
  const status = checks.reduce((w, c) => (order.indexOf(c.status) > order.indexOf(w) ? c.status : w), "ok");
  return statusMark(status);
}

function drawHistory(history) {
  if (!history.length) return h("p", {}, "No rollout history.");
  const rows = history.map((r) =>
    h("tr", {},
      h("th", { scope: "row", text: `#${r.id}` }),
      h("td", { text: `${r.from === null || r.from === undefined ? "(none)" : `v${r.from}`} → v${r.to}` }),
      h("td", { text: r.strategy }),
      h("td", { text: r.outcome || "running" }),
      h("td", { text: when(r.started_at) }),
      h("td", { text: r.ended_at ? seconds(r.ended_at - r.started_at) : "–" }),
      h("td", { text: [r.reason, r.by ? `by ${r.by}` : null].filter(Boolean).join("; ") || "–" }),
      h("td", {}, h("a", { href: r.report, "data-report": "" }, `report #${r.id}`))));
  return table("Rollout history, newest first", ["Rollout", "Versions", "Strategy", "Outcome", "Started", "Took", "Why / who", "Report"], rows);
}

// --- charts

const CHARTS = [
  { key: "rate", title: "Requests per second", value: (p) => p.rate, words: (v) => `${v.toFixed(1)}/s` },
  { key: "p95", title: "P95 latency (ms)", value: (p) => p.p95, words: ms, extra: { label: "P99", value: (p) => p.p99 } },
  { key: "errors", title: "Error rate (%)", value: (p) => (p.errors === null || p.errors === undefined ? null : p.errors * 100), words: (v) => `${v.toFixed(2)}%` },
  { key: "agreement", title: "Agreement with the live version (%)", value: (p) => (p.agreement === undefined ? null : p.agreement * 100), words: (v) => `${v.toFixed(1)}%`, optional: true },
  { key: "psi", title: "Output drift (largest PSI)", value: (p) => (p.psi === undefined ? null : p.psi), words: (v) => v.toFixed(3), optional: true },
];

function drawCharts(el, model, now) {
  const series = [...view.series.entries()]
    .filter(([k]) => k.startsWith(`${model.name}/`) && k.slice(model.name.length + 1).match(/^\d+$/))
    .map(([k, points]) => ({ version: Number(k.slice(model.name.length + 1)), points }))
    .sort((a, b) => a.version - b.version);
  const figures = CHARTS.filter((c) => !c.optional || series.some((x) => x.points.some((p) => c.value(p) !== null)))
    .map((c) => chart(c, series, now));
  el.replaceChildren(h("h3", {}, `Each version, over the last ${Math.round(view.keep / 60)} minutes at most`), h("div", { class: "charts" }, figures));
}

function chart(c, series, now) {
  const W = 320, H = 120, L = 34, B = 16, T = 6;
  // From the first point kept (at most the span kept) to now.
  const first = Math.min(now - 60, ...series.flatMap((sr) => sr.points.slice(0, 1).map((p) => p.t)));
  const start = Math.max(now - view.keep, first);
  const span = Math.max(1, now - start);
  const x = (t) => L + ((t - start) / span) * (W - L - 4);
  const values = series.flatMap((sr) => sr.points.flatMap((p) => [c.value(p), c.extra ? c.extra.value(p) : null])).filter((v) => v !== null && v !== undefined);
  const top = c.key === "agreement" ? 100 : values.length && Math.max(...values) > 0 ? Math.max(...values) * 1.1 : 1;
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const lines = [];
  const legend = [];
  const latest = [];
  series.forEach((sr, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const dash = DASHES[i % DASHES.length];
    for (const [get, extraDash] of [[c.value, dash], ...(c.extra ? [[c.extra.value, "1 2"]] : [])]) {
      const segments = [];
      let current = [];
      for (const p of sr.points) {
        const v = get(p);
        if (v === null || v === undefined) { if (current.length) segments.push(current); current = []; continue; }
        current.push(`${x(p.t).toFixed(1)},${y(v).toFixed(1)}`);
      }
      if (current.length) segments.push(current);
      for (const seg of segments) {
        lines.push(s("polyline", { points: seg.length === 1 ? `${seg[0]} ${seg[0]}` : seg.join(" "), stroke: colour, "stroke-dasharray": extraDash }));
      }
    }
    const last = [...sr.points].reverse().find((p) => c.value(p) !== null && c.value(p) !== undefined);
    const gone = sr.points.length && sr.points[sr.points.length - 1].t < now - 3;
    if (gone) {
      latest.push(`v${sr.version} no longer running`);
    } else if (last) {
      const extra = c.extra && c.extra.value(last) !== null ? `, ${c.extra.label} ${c.words(c.extra.value(last))}` : "";
      latest.push(`v${sr.version} ${c.words(c.value(last))}${extra}`);
    }
    legend.push(h("li", {}, swatch(colour, dash), ` v${sr.version}`));
  });
  if (c.extra) legend.push(h("li", {}, swatch("#57606a", "1 2"), ` ${c.extra.label} (dotted)`));
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-hidden": "true", focusable: "false" },
    s("line", { class: "axis", x1: L, y1: H - B, x2: W - 4, y2: H - B }),
    s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    s("text", { x: L - 3, y: T + 8, "text-anchor": "end" }, short(top)),
    s("text", { x: L - 3, y: H - B, "text-anchor": "end" }, "0"),
    s("text", { x: L, y: H - 3 }, span >= 120 ? `−${Math.round(span / 60)} min` : `−${Math.round(span)} s`),
    s("text", { x: W - 4, y: H - 3, "text-anchor": "end" }, "now"),
    lines);
  return h("figure", { "data-chart": c.key },
    h("figcaption", {}, h("strong", {}, c.title), h("span", { class: "now" }, latest.length ? `Now: ${latest.join("; ")}` : "No data yet")),
    svg, h("ul", { class: "legend", "aria-hidden": "true" }, legend));
}

function swatch(colour, dash) {
  return s("svg", { width: 22, height: 8, "aria-hidden": "true" }, s("line", { x1: 0, y1: 4, x2: 22, y2: 4, stroke: colour, "stroke-width": 2, "stroke-dasharray": dash }));
}

function short(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(1)}k`;
  if (v >= 10) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

// --- announcements for screen readers: a rollout's phase and the gate's verdict, once
// each time they change.

function announce(model) {
  const r = model.rollout;
  if (!r) return;
  const verdict = r.gate && !["promoted", "reverted", "failed"].includes(r.phase) ? `, gate ${r.gate.verdict}` : "";
  const words = `${model.name}: rollout ${r.id} ${describe(r)}${verdict}`;
  if (view.spoken.get(model.name) === words) return;
  const first = !view.spoken.has(model.name);
  view.spoken.set(model.name, words);
  if (!first) document.getElementById("announce").textContent = words;
}

// --- reports: a plain link without tokens; with one, fetched with it and saved as a file
// (a link cannot carry the token).

function openReport(event) {
  const link = event.target.closest("a[data-report]");
  if (!link || !token()) return;
  event.preventDefault();
  fetch(link.getAttribute("href"), { headers: headers() })
    .then((r) => (r.ok ? r.blob() : r.json().then((b) => Promise.reject(new Error(b.error || r.status)))))
    .then((blob) => {
      const a = h("a", { href: URL.createObjectURL(blob), download: `${link.getAttribute("href").split("/").slice(-2).join("-rollout-")}.html` });
      document.body.append(a);
      a.click();
      a.remove();
    })
    .catch((e) => connected(false, `the report could not be read: ${e.message}`));
}

document.getElementById("token-form").addEventListener("submit", useToken);
document.addEventListener("click", openReport);
poll();
