// crossroads dashboard: plain JavaScript over the server's /ui/api endpoints; nothing is fetched from elsewhere.
"use strict";

const COLORS = ["#2557d6", "#e67e22", "#1e8449", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d4ac0d", "#2c3e50",
                "#e84393"];
// decisionCursors: where each decision page seen so far starts (null: the first), the current page last
const state = { me: null, view: "overview", decisionCursors: [null] };

// -- small helpers ------------------------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);
function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                                                           "'": "&#39;" }[c]));
}
function num(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en-US");
  return Number(value.toPrecision(digits)).toString();
}
const usd = (value) => (value === null || value === undefined ? "–" : "US$" + num(value));
const pct = (value) => (value === null || value === undefined ? "–"
  : (100 * value).toFixed(Math.abs(value) < 0.01 && value !== 0 ? 3 : 1) + "%");
const secs = (value) => (value === null || value === undefined ? "–"
  : value < 1 ? num(1000 * value, 3) + " ms" : num(value, 3) + " s");
const when = (s) => new Date(s * 1000).toISOString().replace("T", " ").slice(0, 19);
// A figure people read, with its raw value kept for tests and copy-paste.
function figure(id, label, text, raw, note = "") {
  return `<div class="card" data-testid="${id}"><div class="label">${esc(label)}</div>` +
    `<div class="value" data-value="${esc(raw ?? "")}">${esc(text)}</div><div class="note">${esc(note)}</div></div>`;
}
function interval(estimate, format) {
  if (!estimate || estimate.value === null) return estimate && estimate.note ? estimate.note : "not enough data";
  return `95% interval ${format(estimate.low)} to ${format(estimate.high)}, n = ${estimate.n}`;
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem("crossroads-key");
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${key}`,
                                                             "Content-Type": "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function windowQuery() {
  const params = new URLSearchParams();
  const span = $("window").value;
  if (span) params.set("since_s", String(Date.now() / 1000 - Number(span)));
  if ($("route").value) params.set("route", $("route").value);
  return params;
}

// -- charts (SVG) -------------------------------------------------------------------------------------------
function lineChart(title, xs, series, format = num) {
  const width = 560, height = 200, left = 72, right = 10, top = 12, bottom = 26;
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const high = Math.max(...values, 0) || 1;
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const x = (t) => left + (x1 === x0 ? (width - left - right) / 2 : ((t - x0) / (x1 - x0)) * (width - left - right));
  const y = (v) => top + (1 - v / high) * (height - top - bottom);
  let svg = `<svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">`;
  for (const f of [0, 0.5, 1]) {
    svg += `<line x1="${left}" x2="${width - right}" y1="${y(high * f)}" y2="${y(high * f)}" stroke="#dde1ea"/>` +
      `<text x="${left - 4}" y="${y(high * f) + 4}" font-size="10" text-anchor="end" fill="#677086">${esc(format(high * f))}</text>`;
  }
  svg += `<text x="${left}" y="${height - 6}" font-size="10" fill="#677086">${esc(when(x0))}</text>` +
    `<text x="${width - right}" y="${height - 6}" font-size="10" text-anchor="end" fill="#677086">${esc(when(x1))}</text>`;
  series.forEach((s, k) => {
    const points = xs.map((t, i) => [t, s.values[i]]).filter(([, v]) => v !== null && v !== undefined);
    const color = s.color || COLORS[k % COLORS.length];
    if (points.length === 1) {
      svg += `<circle cx="${x(points[0][0])}" cy="${y(points[0][1])}" r="3" fill="${color}"/>`;
    } else if (points.length) {
      svg += `<polyline fill="none" stroke="${color}" stroke-width="2" ${s.dashed ? 'stroke-dasharray="5 4"' : ""} ` +
        `points="${points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`;
    }
  });
  svg += "</svg>";
  const legend = series.map((s, k) => `<span><i class="swatch" data-color="${s.color || COLORS[k % COLORS.length]}"></i>` +
    `${esc(s.name)}</span>`).join("");
  return `<div class="chart"><h3>${esc(title)}</h3>${svg}<div class="legend">${legend}</div></div>`;
}

function stackedBars(title, xs, stacks) {
  const width = 560, height = 200, left = 40, right = 10, top = 12, bottom = 26;
  const names = Object.keys(stacks);
  const totals = xs.map((_, i) => names.reduce((sum, name) => sum + stacks[name][i], 0));
  const slot = (width - left - right) / Math.max(xs.length, 1);
  let svg = `<svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">`;
  xs.forEach((_, i) => {
    let base = top + (height - top - bottom);
    names.forEach((name, k) => {
      const share = totals[i] ? stacks[name][i] / totals[i] : 0;
      const h = share * (height - top - bottom);
      base -= h;
      if (h > 0) {
        svg += `<rect x="${(left + i * slot + slot * 0.1).toFixed(1)}" y="${base.toFixed(1)}" width="${(slot * 0.8).toFixed(1)}" ` +
          `height="${h.toFixed(1)}" fill="${COLORS[k % COLORS.length]}"><title>${esc(name)}: ${stacks[name][i]} ` +
          `(${pct(share)})</title></rect>`;
      }
    });
  });
  svg += `<text x="${left - 4}" y="${top + 8}" font-size="10" text-anchor="end" fill="#677086">100%</text>`;
  if (xs.length) {
    svg += `<text x="${left}" y="${height - 6}" font-size="10" fill="#677086">${esc(when(xs[0]))}</text>` +
      `<text x="${width - right}" y="${height - 6}" font-size="10" text-anchor="end" fill="#677086">${esc(when(xs[xs.length - 1]))}</text>`;
  }
  svg += "</svg>";
  const legend = names.map((name, k) => `<span><i class="swatch" data-color="${COLORS[k % COLORS.length]}"></i>${esc(name)}</span>`).join("");
  return `<div class="chart"><h3>${esc(title)}</h3>${svg}<div class="legend">${legend}</div></div>`;
}

function paintSwatches(root) {  // colours set through the CSSOM: the page's policy allows no inline style attributes
  root.querySelectorAll(".swatch[data-color]").forEach((el) => { el.style.background = el.dataset.color; });
}

function table(id, columns, rows, options = {}) {
  const head = columns.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.label)}</th>`).join("");
  const body = rows.map((row, i) => {
    const cls = [options.clickable ? "clickable" : "", options.picked && options.picked(row) ? "picked" : ""].join(" ");
    return `<tr class="${cls}" data-row="${i}">` + columns.map((c) => {
      const raw = c.value(row);
      return `<td class="${c.num ? "num" : ""}" data-col="${esc(c.key || c.label)}" data-value="${esc(raw ?? "")}">` +
        `${esc(c.format ? c.format(raw) : raw)}</td>`;
    }).join("") + "</tr>";
  }).join("");
  return `<table data-testid="${id}"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

const USAGE_COLUMNS = [
  { label: "name", key: "name", value: (r) => r.name },
  { label: "requests", key: "requests", num: true, value: (r) => r.requests },
  { label: "share", key: "share", num: true, value: (r) => r.share, format: pct },
  { label: "spend", key: "spend_usd", num: true, value: (r) => r.spend_usd, format: usd },
  { label: "errors", key: "errors", num: true, value: (r) => r.errors },
  { label: "fallbacks", key: "fallbacks", num: true, value: (r) => r.fallbacks },
  { label: "p50", key: "latency_p50_s", num: true, value: (r) => r.latency_p50_s, format: secs },
  { label: "p95", key: "latency_p95_s", num: true, value: (r) => r.latency_p95_s, format: secs },
];

// -- views --------------------------------------------------------------------------------------------------
const views = {
  async overview(root) {
    const { report, live } = await api(`/ui/api/report?${windowQuery()}`);
    if (report.empty) { root.innerHTML = `<p class="muted" data-testid="empty">${esc(report.empty)}</p>`; return; }
    const totals = report.totals, savings = report.savings, served = report.quality.served;
    const dearest = savings.dearest ? savings.models[savings.dearest] : null;
    let html = `<h1>Overview</h1><div class="cards">` +
      figure("requests", "Requests", num(totals.requests), totals.requests,
             `${when(report.window.first_s)} to ${when(report.window.last_s)}`) +
      figure("spend", "Spend", usd(savings.served_usd), savings.served_usd) +
      figure("savings", `Saved against always ${savings.dearest || "the dearest model"}`,
             dearest ? pct(dearest.savings.value) : "–", dearest ? dearest.savings.value : "",
             dearest ? interval(dearest.savings, pct) : "") +
      figure("quality", "Quality served", served.value === null ? "–" : num(served.value, 3), served.value ?? "",
             interval(served, (v) => num(v, 3))) +
      figure("latency", "Latency p50 / p95 / p99",
             `${secs(totals.latency_p50_s)} / ${secs(totals.latency_p95_s)} / ${secs(totals.latency_p99_s)}`,
             totals.latency_p50_s) +
      figure("errors", "Errors", num(totals.errors), totals.errors, `fallbacks: ${totals.fallbacks}`) +
      `</div>`;
    const t = report.timeline;
    html += `<h2>Over time (steps of ${num(t.step_s / 60)} min)</h2><div class="charts">` +
      lineChart("Requests", t.start_s, [{ name: "requests", values: t.requests },
                                        { name: "errors", values: t.errors, color: "#c0392b" },
                                        { name: "fallbacks", values: t.fallbacks, color: "#e67e22" }]) +
      lineChart("Spend (US$)", t.start_s, [{ name: "spend", values: t.spend_usd }], usd) +
      lineChart("Latency (s)", t.start_s, [{ name: "p50", values: t.latency_p50_s },
                                           { name: "p95", values: t.latency_p95_s, color: "#e67e22" },
                                           { name: "p99", values: t.latency_p99_s, color: "#c0392b", dashed: true }], secs) +
      `</div>`;
    if (live) {
      html += `<h2>This server since it started (/metrics)</h2><div class="cards">` +
        figure("live-decisions", "Decisions", num(live.decisions), live.decisions) +
        figure("live-cost", "Cost", usd(live.cost_usd), live.cost_usd) +
        figure("live-errors", "Upstream errors", num(live.upstream_errors), live.upstream_errors) +
        figure("live-fallbacks", "Fallbacks", num(live.fallbacks), live.fallbacks) +
        figure("live-feedback", "Feedback", num(live.feedback), live.feedback) + `</div>`;
    }
    root.innerHTML = html;
  },

  async routing(root) {
    const [{ report }, learners] = await Promise.all([api(`/ui/api/report?${windowQuery()}`), api("/ui/api/learners")]);
    if (report.empty) { root.innerHTML = `<p class="muted" data-testid="empty">${esc(report.empty)}</p>`; return; }
    let html = `<h1>Routing impact</h1><div class="charts">` +
      stackedBars("Each model's share of traffic over time", report.timeline.start_s, report.timeline.models) + `</div>`;
    html += `<div class="tables">`;
    for (const by of ["model", "route", "key", "team", "category"]) {
      html += `<div><h2>By ${by}</h2>${table(`by-${by}`, USAGE_COLUMNS, report.breakdown[by])}</div>`;
    }
    html += `</div><h2>Learners now</h2>`;
    const routes = Object.entries(learners.routes);
    if (!routes.length) html += `<p class="muted">${esc(learners.note || "no route of this server has a learner")}</p>`;
    for (const [route, view] of routes) {
      html += `<h3>${esc(route)}: ${esc(view.learner)}, ${view.steps} decisions</h3>`;
      html += view.models ? table(`learner-${route}`, [
        { label: "model", value: (r) => r[0] },
        { label: "probability of being picked", key: "probability", num: true, value: (r) => r[1].probability, format: pct },
        { label: "estimated reward", key: "estimate", num: true, value: (r) => r[1].estimate, format: (v) => num(v, 3) },
      ], Object.entries(view.models)) : `<p class="muted">${esc(view.note)}</p>`;
    }
    root.innerHTML = html;
  },

  async budgets(root) {
    const budgets = await api("/ui/api/budgets");
    let html = `<h1>Budgets</h1>`;
    if (state.me.admin) {
      html += `<h2>Routes (paced)</h2>`;
      if (!budgets.routes.length) html += `<p class="muted">No route of this server has a budget (routes.NAME.budget).</p>`;
      for (const b of budgets.routes) {
        html += `<div class="cards">` +
          figure(`budget-${b.route}`, `${b.route}: US$${num(b.usd)} per ${b.per} (${b.mode})`, usd(b.spent_usd), b.spent_usd,
                 `spent since ${when(b.period_start_s)}; ${pct(b.spent_usd / b.usd)} of the budget`) +
          figure(`wtp-${b.route}`, "Willingness to pay (quality per US$)", num(b.willingness_to_pay), b.willingness_to_pay,
                 b.floor_model ? `floor model: ${b.floor_model}` : "") + `</div>` +
          `<div class="charts">` + lineChart(`${b.route}: burn-down`, b.burn_down.time_s, [
            { name: "spent", values: b.burn_down.spent_usd },
            { name: "target", values: b.burn_down.target_usd, color: "#7f8c8d", dashed: true }], usd) + `</div>`;
      }
    }
    html += `<h2>Teams' budgets</h2>` + table("team-budgets", [
      { label: "team", key: "name", value: (t) => t.name },
      { label: "keys", num: true, value: (t) => t.keys },
      { label: "budget", value: (t) => (t.budget ? `US$${num(t.budget.usd)} per ${t.budget.per}, ${t.budget.mode}` : "none") },
      { label: "spent this period", key: "spent_usd", num: true, value: (t) => t.spent_usd, format: usd },
      { label: "used", key: "used", num: true, value: (t) => (t.budget ? t.spent_usd / t.budget.usd : null), format: pct },
      { label: "resets", value: (t) => when(t.resets_s) },
    ], budgets.teams);
    html += `<h2>Keys' budgets</h2>`;
    const capped = budgets.keys.filter((k) => k.budget);
    html += capped.length ? table("key-budgets", [
      { label: "key", value: (k) => `${k.name} (${k.prefix}…)` },
      { label: "team", value: (k) => k.team },
      { label: "budget", value: (k) => `US$${num(k.budget.usd)} per ${k.budget.per}, ${k.budget.mode}` },
      { label: "spent this period", key: "spent_usd", num: true, value: (k) => k.spent_usd, format: usd },
      { label: "used", key: "used", num: true, value: (k) => k.spent_usd / k.budget.usd, format: pct },
      { label: "state", value: (k) => k.state },
    ], capped) : `<p class="muted">No key has a budget.</p>`;
    root.innerHTML = html;
  },

  async decisions(root) {
    state.decisionCursors = [null];  // a cursor belongs to the filters it was read under: the window or route changed
    root.innerHTML = `<h1>Decisions</h1><form class="toolbar" id="search-form">` +
      `<input id="search" placeholder="decision id, route, model or words of the prompt" size="48" value="${esc(state.search || "")}">` +
      `<button type="submit">Search</button></form><div id="decision-list"></div><div id="decision-detail"></div>`;
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.search = $("search").value;
      state.decisionCursors = [null];
      listDecisions();
    });
    await listDecisions();
  },

  async playground(root) {
    root.innerHTML = `<h1>Playground</h1><p class="muted">What each route would decide for a prompt, and what it ` +
      `expects of each model. No model is called and nothing is logged.</p>` +
      `<form id="play-form"><textarea id="prompt" placeholder="Type a prompt"></textarea>` +
      `<div class="toolbar"><input id="category" placeholder="category (optional)"><button type="submit">Route it</button></div>` +
      `</form><div id="play-result"></div>`;
    $("play-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = $("play-result");
      out.innerHTML = `<p class="muted">routing…</p>`;
      try {
        const body = { prompt: $("prompt").value };
        if ($("category").value) body.category = $("category").value;
        const result = await api("/ui/api/playground", { method: "POST", body: JSON.stringify(body) });
        out.innerHTML = result.routes.map((r) => `<h2 data-testid="play-${esc(r.route)}" data-model="${esc(r.model)}">` +
          `${esc(r.route)} would pick ${esc(r.model)}</h2><p class="muted">${esc(r.reason)}</p>` +
          table(`play-table-${r.route}`, [
            { label: "model", key: "model", value: (row) => row[0] },
            { label: "predicted quality", key: "predicted_quality", num: true, value: (row) => row[1].predicted_quality, format: (v) => num(v, 3) },
            { label: "expected cost", key: "expected_cost_usd", num: true, value: (row) => row[1].expected_cost_usd, format: usd },
            { label: "score", key: "score", num: true, value: (row) => row[1].score, format: (v) => num(v, 3) },
            { label: "probability", key: "probability", num: true, value: (row) => row[1].probability, format: pct },
          ], Object.entries(r.models), { picked: (row) => row[0] === r.model })).join("") ||
          `<p class="muted">This server has no route to preview.</p>`;
      } catch (error) {
        out.innerHTML = `<p class="error" role="alert">${esc(error.message)}</p>`;
      }
    });
  },

  async keys(root) {
    const { keys, teams } = await api("/ui/api/budgets");
    let html = `<h1>Keys</h1>`;
    if (state.me.admin) {
      const targets = teams.map((t) => `<option value="team:${esc(t.name)}">team ${esc(t.name)}</option>`).join("") +
        keys.filter((k) => k.state === "active").map((k) => `<option value="key:${esc(k.key_id)}">key ${esc(k.name)} ` +
                                                          `(${esc(k.prefix)}…)</option>`).join("");
      html += `<h2>New team</h2><form class="grid" id="team-form"><label>name<input id="team-name" required></label>` +
        budgetFields("team") + `<button type="submit">Create team</button></form>` +
        `<h2>New key</h2><form class="grid" id="key-form">` +
        `<label>name<input id="key-name" required></label><label>team<input id="key-team" required></label>` +
        `<label>routes (comma-separated; empty: all)<input id="key-routes"></label>` +
        `<label>models (comma-separated; empty: all)<input id="key-models"></label>` +
        `<label>rate limit (requests/s)<input id="key-rate" type="number" min="0" step="any"></label>` +
        budgetFields("key") +
        `<label>expires in (days)<input id="key-expiry" type="number" min="0" step="any"></label>` +
        `<button type="submit">Create key</button></form>` +
        `<h2>Change a budget</h2><form class="grid" id="budget-form"><label>of<select id="change-target">${targets}` +
        `</select></label>${budgetFields("change", "empty: no budget")}<button type="submit">Set budget</button></form>` +
        `<p id="key-message" role="status"></p>`;
    }
    html += `<h2>${state.me.admin ? "All keys" : `Keys of team ${esc(state.me.team)}`}</h2>` + table("keys", [
      { label: "name", key: "name", value: (k) => k.name },
      { label: "key", value: (k) => `${k.prefix}…` },
      { label: "team", key: "team", value: (k) => k.team },
      { label: "routes", value: (k) => (k.routes ? k.routes.join(", ") : "all") },
      { label: "models", value: (k) => (k.models ? k.models.join(", ") : "all") },
      { label: "rate limit", value: (k) => (k.rate_limit_per_s ? `${k.rate_limit_per_s}/s` : "–") },
      { label: "budget", value: (k) => (k.budget ? `US$${num(k.budget.usd)} per ${k.budget.per}, ${k.budget.mode}` : "–") },
      { label: "expires", value: (k) => (k.expires_s ? when(k.expires_s) : "never") },
      { label: "state", key: "state", value: (k) => k.state },
    ], keys);
    root.innerHTML = html;
    if (!state.me.admin) return;
    root.querySelectorAll('table[data-testid="keys"] tbody tr').forEach((tr, i) => {
      const key = keys[Number(tr.dataset.row)];
      const cell = document.createElement("td");
      if (key.state === "active") {
        const button = document.createElement("button");
        button.className = "danger";
        button.textContent = "Revoke";
        button.dataset.testid = `revoke-${key.name}`;
        button.addEventListener("click", async () => {
          if (!window.confirm(`Revoke ${key.name}? Requests with it fail at once on every replica.`)) return;
          await api(`/admin/keys/${encodeURIComponent(key.key_id)}/revoke`, { method: "POST", body: "{}" });
          render();
        });
        cell.appendChild(button);
      }
      tr.appendChild(cell);
    });
    $("team-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { name: $("team-name").value };
      if (readBudget("team")) body.budget = readBudget("team");
      await submit(() => api("/admin/teams", { method: "POST", body: JSON.stringify(body) }),
                   (team) => `team ${esc(team.name)} created`);
    });
    $("key-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const list = (id) => $(id).value.split(",").map((s) => s.trim()).filter(Boolean);
      const body = { name: $("key-name").value, team: $("key-team").value };
      if (list("key-routes").length) body.routes = list("key-routes");
      if (list("key-models").length) body.models = list("key-models");
      if ($("key-rate").value) body.rate_limit_per_s = Number($("key-rate").value);
      if (readBudget("key")) body.budget = readBudget("key");
      if ($("key-expiry").value) body.expires_in_s = Number($("key-expiry").value) * 86400;
      await submit(() => api("/admin/keys", { method: "POST", body: JSON.stringify(body) }), (created) =>
        `key ${esc(created.key.name)} created; its secret, shown this once:<div class="secret" data-testid="secret">` +
        `${esc(created.secret)}</div>`);
    });
    $("budget-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const [kind, id] = $("change-target").value.split(/:(.*)/s);
      const path = kind === "team" ? `/admin/teams/${encodeURIComponent(id)}` : `/admin/keys/${encodeURIComponent(id)}`;
      await submit(() => api(path, { method: "PATCH", body: JSON.stringify({ budget: readBudget("change") }) }),
                   (changed) => `budget of ${esc(changed.name)}: ${changed.budget ? esc(JSON.stringify(changed.budget)) : "none"}`);
    });
  },
};

// A budget's inputs (US$, period, mode) and what they say: {usd, per, mode}, or null when no amount is given.
function budgetFields(prefix, hint = "optional") {
  return `<label>budget (US$, ${hint})<input id="${prefix}-budget" type="number" min="0" step="any"></label>` +
    `<label>per<select id="${prefix}-per"><option>day</option><option>week</option><option selected>month</option>` +
    `</select></label><label>mode<select id="${prefix}-mode"><option value="cap">cap: refuse once spent</option>` +
    `<option value="pace">pace: cheaper models as it runs short</option></select></label>`;
}
function readBudget(prefix) {
  const usd = $(`${prefix}-budget`).value;
  return usd === "" ? null : { usd: Number(usd), per: $(`${prefix}-per`).value, mode: $(`${prefix}-mode`).value };
}

async function submit(call, message) {
  try {
    const result = await call();
    await render(false);
    $("key-message").innerHTML = `<span class="ok">${message(result)}</span>`;
  } catch (error) {
    $("key-message").innerHTML = `<span class="error" role="alert">${esc(error.message)}</span>`;
  }
}

async function listDecisions() {
  const params = windowQuery();
  params.delete("since_s");
  const cursor = state.decisionCursors[state.decisionCursors.length - 1];
  if (cursor) params.set("cursor", cursor);  // the server reads on from there through its index, at any depth
  params.set("per_page", "25");
  if (state.search) params.set("q", state.search);
  const found = await api(`/ui/api/decisions?${params}`);
  const page = state.decisionCursors.length;
  const more = found.total_capped ? "+" : "";  // a search counts its matches up to a cap
  const pages = Math.max(1, Math.ceil(found.total / found.per_page));
  const list = $("decision-list");
  list.innerHTML = `<p class="muted" data-testid="decision-count" data-value="${found.total}" ` +
    `data-capped="${found.total_capped ? "yes" : "no"}">${found.total}${more} decisions, ` +
    `page ${page} of ${pages}${more}</p>` + table("decisions", [
      { label: "when", value: (d) => when(d.created_s) },
      { label: "route", key: "route", value: (d) => d.route },
      { label: "model", key: "model", value: (d) => d.model || d.chosen },
      { label: "probability", num: true, value: (d) => d.probability, format: pct },
      { label: "status", key: "status", value: (d) => d.status || "not called" },
      { label: "cost", key: "cost_usd", num: true, value: (d) => d.cost_usd, format: usd },
      { label: "latency", num: true, value: (d) => d.latency_s, format: secs },
      { label: "quality", key: "quality", num: true, value: (d) => d.quality, format: (v) => num(v, 3) },
      { label: "team", value: (d) => d.team || "" },
      { label: "prompt", value: (d) => d.prompt || "(not stored)" },
    ], found.decisions, { clickable: true }) +
    `<div class="toolbar"><button class="secondary" id="prev" ${page <= 1 ? "disabled" : ""}>Previous</button>` +
    `<button class="secondary" id="next" ${found.next ? "" : "disabled"}>Next</button></div>`;
  list.querySelectorAll("tr.clickable").forEach((tr) => tr.addEventListener("click", () =>
    showDecision(found.decisions[Number(tr.dataset.row)].decision_id)));
  $("prev").addEventListener("click", () => { state.decisionCursors.pop(); listDecisions(); });
  $("next").addEventListener("click", () => { state.decisionCursors.push(found.next); listDecisions(); });
}

async function showDecision(id) {
  const d = await api(`/ui/api/decisions/${encodeURIComponent(id)}`);
  const o = d.outcome || {};
  const scores = d.scores || {};
  let html = `<div class="detail" data-testid="decision-detail" data-id="${esc(d.decision_id)}"><h2>${esc(d.decision_id)}</h2>` +
    `<p>${esc(when(d.created_s))} · route <b>${esc(d.route)}</b> chose <b>${esc(d.model)}</b> with probability ` +
    `${esc(pct(d.probability))}${d.team ? ` · team ${esc(d.team)}` : ""}${d.category ? ` · category ${esc(d.category)}` : ""}</p>` +
    `<h3>Candidates</h3>` + table("candidates", [
      { label: "model", value: (m) => m },
      { label: "score", key: "score", num: true, value: (m) => scores[m], format: (v) => num(v, 4) },
      { label: "chosen", value: (m) => (m === d.model ? "yes" : "") },
    ], d.candidates) +
    `<h3>Outcome</h3>` + (d.outcome ? `<p data-testid="outcome">${esc(o.model)} answered: ${esc(o.status)}, ` +
      `${esc(usd(o.cost_usd))}, ${esc(secs(o.latency_s))}, ${o.tokens_in ?? "–"} tokens in, ${o.tokens_out ?? "–"} out, ` +
      `${o.fallbacks} fallbacks${o.error ? `; error: ${esc(o.error)}` : ""}</p>` : `<p class="muted">no outcome (never called)</p>`) +
    `<h3>Feedback</h3>` + (d.feedback.length ? table("feedback", [
      { label: "source", value: (f) => f.source }, { label: "model", value: (f) => f.model || "served answer" },
      { label: "quality", key: "quality", num: true, value: (f) => f.quality, format: (v) => num(v, 3) },
      { label: "reward", num: true, value: (f) => f.reward, format: (v) => num(v, 3) },
      { label: "when", value: (f) => when(f.created_s) }], d.feedback) : `<p class="muted">none</p>`);
  if (o.calls && o.calls.length) {
    html += `<h3>Cascade calls</h3>` + table("cascade-calls", [
      { label: "model", value: (c) => c.model }, { label: "status", value: (c) => c.status },
      { label: "trust", num: true, value: (c) => c.trust, format: (v) => num(v, 3) },
      { label: "cost", num: true, value: (c) => c.cost_usd, format: usd },
      { label: "returned", value: (c) => (c.model === o.model && c.status === "ok" ? "yes" : "") }], o.calls);
  }
  if (d.shadow_outcomes.length) {
    html += `<h3>Shadow calls</h3>` + table("shadow", [
      { label: "model", value: (s) => s.model }, { label: "status", value: (s) => s.status },
      { label: "cost", num: true, value: (s) => s.cost_usd, format: usd }], d.shadow_outcomes);
  }
  html += `<h3>Prompt</h3>${d.prompt ? `<pre>${esc(d.prompt)}</pre>` : `<p class="muted">not stored (store_prompts: false)</p>`}` +
    (o.response ? `<h3>Response</h3><pre>${esc(o.response)}</pre>` : "") + `</div>`;
  $("decision-detail").innerHTML = html;
  $("decision-detail").scrollIntoView({ block: "nearest" });
}

// -- shell ---------------------------------------------------------------------------------------------------
async function render(clear = true) {
  const root = $("view");
  state.view = (location.hash || "#overview").slice(1);
  if (!views[state.view]) state.view = "overview";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === state.view));
  if (clear) root.innerHTML = `<p class="muted">loading…</p>`;
  root.dataset.view = state.view;
  root.dataset.ready = "no";
  try {
    await views[state.view](root);
  } catch (error) {
    if (error.status === 401 || error.status === 403) return signOut(error.message);
    root.innerHTML = `<p class="error" role="alert" data-testid="view-error">${esc(error.message)}</p>`;
  }
  paintSwatches(root);
  root.dataset.ready = "yes";
}

async function signIn(key) {
  sessionStorage.setItem("crossroads-key", key);
  try {
    state.me = await api("/ui/api/me");
  } catch (error) {
    return signOut(error.message);
  }
  $("login").hidden = true;
  for (const id of ["nav", "filters", "view", "logout"]) $(id).hidden = false;
  $("who").textContent = state.me.admin ? "admin" : `team ${state.me.team} (key ${state.me.key.name})`;
  $("who").dataset.team = state.me.team || "";
  $("route").innerHTML = `<option value="">all</option>` +
    state.me.routes.map((r) => `<option value="${esc(r)}">${esc(r)}</option>`).join("");
  await render();
}

function signOut(message = "") {
  sessionStorage.removeItem("crossroads-key");
  state.me = null;
  $("login").hidden = false;
  for (const id of ["nav", "filters", "view", "logout"]) $(id).hidden = true;
  $("who").textContent = "";
  $("login-error").textContent = message;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => { event.preventDefault(); signIn($("key").value.trim()); });
  $("logout").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => state.me && render());
  $("window").addEventListener("change", () => render());
  $("route").addEventListener("change", () => render());
  const saved = sessionStorage.getItem("crossroads-key");
  if (saved) signIn(saved);
});
