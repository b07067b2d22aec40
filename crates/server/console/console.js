// The sessiond console: plain browser JavaScript, no framework and no build step. Everything it
// shows comes from the admin API (`/_admin/...`, bearer admin token) and `/metrics`.

const $ = (selector) => document.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
};
const SVG = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}, ...children) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
};

const state = {
  token: sessionStorage.getItem("sessiond-token"),
  account: sessionStorage.getItem("sessiond-account") || "demo",
  apps: [],
  editing: null,
  metrics: null,
  timer: null,
};

/** An admin API call: the JSON answer, or an Error carrying the API's message. */
async function api(method, path, body) {
  const response = await fetch(`/_admin/accounts/${encodeURIComponent(state.account)}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${state.token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : body,
  });
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(answer.message || `${response.status}`);
    error.status = response.status;
    throw error;
  }
  return answer;
}

// ---- sign-in ----------------------------------------------------------------------------

async function signIn(token, account) {
  state.token = token;
  state.account = account;
  await loadApps();
  sessionStorage.setItem("sessiond-token", token);
  sessionStorage.setItem("sessiond-account", account);
  $("#sign-in").hidden = true;
  $("#console").hidden = false;
  $("#sign-out").hidden = false;
  $("#who").textContent = `account ${account}`;
  pollMetrics();
}

function signOut() {
  sessionStorage.clear();
  location.reload();
}

// ---- apps and the graph -------------------------------------------------------------------

async function loadApps() {
  const list = await api("GET", "/apps");
  state.apps = list.apps;
  renderApps(list);
  renderGraph(list.apps);
}

const keysOf = (byNamespace) =>
  Object.entries(byNamespace || {}).flatMap(([ns, keys]) => keys.map((k) => `${ns}.${k}`));

function renderApps(list) {
  const body = $("#apps tbody");
  body.replaceChildren(
    ...list.apps.map((app, i) =>
      el(
        "tr",
        { "data-app": app.name },
        el("td", {}, String(i + 1)),
        el("td", {}, el("strong", {}, app.name), app.declaration.runOnCreate ? " (runOnCreate)" : ""),
        el("td", {}, app.source + (app.builtin ? ", built-in" : "")),
        el("td", { class: "mono" }, keysOf(app.declaration.input).join(", ")),
        el("td", { class: "mono" }, keysOf(app.declaration.output).join(", ")),
        el("td", { class: "mono" }, app.declaration.when.join(", ")),
        el(
          "td",
          {},
          el("button", { class: "edit", onclick: () => editApp(app) }, "Edit"),
          " ",
          el("button", { class: "uninstall", onclick: () => uninstallApp(app.name) }, "Uninstall"),
        ),
      ),
    ),
  );
  $("#warnings").replaceChildren(...list.warnings.map((w) => el("li", { class: "hint" }, w)));
}

/** The app entry to edit in the form: what the API lists, without what it derived. */
function editApp(app) {
  const entry = { ...app };
  for (const derived of ["name", "source", "builtin", "signed", "declaration"]) delete entry[derived];
  // A declaration read from a file on the server is edited inline.
  if (entry.configuration_file !== undefined) {
    delete entry.configuration_file;
    const { input, output, runOnCreate } = app.declaration;
    entry.configuration = { input, output, runOnCreate };
  }
  state.editing = app.name;
  $("#app-name").value = app.name;
  $("#app-body").value = JSON.stringify(entry, null, 2);
  $("#app-form-title").textContent = `Edit ${app.name}`;
  $("#app-submit").textContent = "Save";
  $("#app-name").focus();
}

async function submitApp(event) {
  event.preventDefault();
  const name = $("#app-name").value.trim();
  $("#app-error").textContent = "";
  try {
    await api("PUT", `/apps/${encodeURIComponent(name)}`, $("#app-body").value);
    state.editing = null;
    $("#app-form-title").textContent = "Install an app";
    $("#app-submit").textContent = "Install";
    await loadApps();
  } catch (e) {
    $("#app-error").textContent = e.message;
  }
}

async function uninstallApp(name) {
  if (!confirm(`Uninstall ${name}?`)) return;
  try {
    await api("DELETE", `/apps/${encodeURIComponent(name)}`);
    await loadApps();
  } catch (e) {
    $("#app-error").textContent = e.message;
  }
}

/** Whether an input pattern (an exact key or an anchored regular expression) matches `key`. */
function matches(pattern, key) {
  if (pattern === key) return true;
  if (!/[*+?()[\]{}|^$\\]/.test(pattern)) return false;
  try {
    return new RegExp(`^(?:${pattern})$`).test(key);
  } catch {
    return false;
  }
}

/** Edges from an app to each app that watches (or tests in `when`) one of its outputs. */
function edgesOf(apps) {
  const edges = [];
  apps.forEach((from, i) => {
    apps.forEach((to, j) => {
      const labels = [];
      let conditional = false;
      for (const [ns, keys] of Object.entries(from.declaration.output)) {
        for (const key of keys) {
          const watched = (to.declaration.input[ns] || []).some((p) => matches(p, key));
          if (watched) labels.push(`${ns}.${key}`);
          for (const condition of to.declaration.when) {
            if (condition.startsWith(`${ns}.${key} =`)) {
              labels.push(`when ${condition}`);
              conditional = true;
            }
          }
        }
      }
      if (labels.length) edges.push({ from: i, to: j, labels, conditional });
    });
  });
  return edges;
}

/** Columns by longest path over the graph without the edges that close a cycle (found by a
 * depth-first walk in installation order). */
function layers(count, edges) {
  const out = Array.from({ length: count }, () => []);
  for (const e of edges) if (e.from !== e.to) out[e.from].push(e);
  const mark = new Array(count).fill(0); // 0 new, 1 on the walk's path, 2 done
  const walk = (i) => {
    mark[i] = 1;
    for (const e of out[i]) {
      if (mark[e.to] === 1) e.back = true;
      else if (mark[e.to] === 0) walk(e.to);
    }
    mark[i] = 2;
  };
  for (let i = 0; i < count; i++) if (mark[i] === 0) walk(i);
  const level = new Array(count).fill(0);
  for (let pass = 0; pass < count; pass++) {
    let moved = false;
    for (const e of edges) {
      if (e.from !== e.to && !e.back && level[e.to] < level[e.from] + 1) {
        level[e.to] = level[e.from] + 1;
        moved = true;
      }
    }
    if (!moved) break;
  }
  return level;
}

function renderGraph(apps) {
  const edges = edgesOf(apps);
  const level = layers(apps.length, edges);
  const [w, h, gapX, gapY] = [190, 38, 170, 56];
  const rows = {};
  const at = apps.map((_, i) => {
    const row = (rows[level[i]] = (rows[level[i]] || 0) + 1) - 1;
    return { x: 20 + level[i] * (w + gapX), y: 20 + row * (h + gapY) };
  });
  const width = Math.max(...at.map((p) => p.x + w), 200) + 20;
  const height = Math.max(...at.map((p) => p.y + h), 60) + 20;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  root.append(
    svg(
      "defs",
      {},
      svg(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#7a8599" }),
      ),
    ),
  );
  for (const e of edges) {
    const a = at[e.from];
    const b = at[e.to];
    let d;
    let mid;
    if (e.from === e.to) {
      d = `M${a.x + w - 30},${a.y} C${a.x + w - 10},${a.y - 30} ${a.x + w + 20},${a.y + 5} ${a.x + w},${a.y + 12}`;
      mid = { x: a.x + w - 20, y: a.y - 14 };
    } else if (b.x > a.x) {
      const [x1, y1, x2, y2] = [a.x + w, a.y + h / 2, b.x, b.y + h / 2];
      d = `M${x1},${y1} C${x1 + gapX / 2},${y1} ${x2 - gapX / 2},${y2} ${x2},${y2}`;
      mid = { x: x1 + 6, y: y1 + (y2 - y1) * 0.3 - 5 };
    } else {
      // Back to an earlier column (or the same one): under the boxes.
      const [x1, y1, x2, y2] = [a.x + w / 2 + 20, a.y + h, b.x + w / 2 - 20, b.y + h];
      const low = Math.max(y1, y2) + 28;
      d = `M${x1},${y1} C${x1},${low} ${x2},${low} ${x2},${y2}`;
      mid = { x: (x1 + x2) / 2 - 40, y: low + 4 };
    }
    const shown = e.labels.length > 1 ? `${e.labels[0]} +${e.labels.length - 1}` : e.labels[0];
    const label = svg("text", {}, document.createTextNode(shown), svg("title", {}, document.createTextNode(e.labels.join("\n"))));
    label.setAttribute("x", mid.x);
    label.setAttribute("y", mid.y);
    root.append(
      svg(
        "g",
        { class: `edge${e.conditional ? " conditional" : ""}`, "data-from": apps[e.from].name, "data-to": apps[e.to].name },
        svg("path", { d }),
        label,
      ),
    );
  }
  apps.forEach((app, i) => {
    const { x, y } = at[i];
    const text = svg("text", { x: x + 8, y: y + 23 }, document.createTextNode(app.name));
    root.append(
      svg(
        "g",
        { class: `node${app.declaration.runOnCreate ? " on-create" : ""}`, "data-app": app.name },
        svg("rect", { x, y, width: w, height: h, rx: 5 }),
        text,
      ),
    );
  });
  $("#graph").replaceChildren(root);
}

// ---- the session inspector ------------------------------------------------------------------

async function openSession(event) {
  event?.preventDefault();
  const id = $("#session-id").value.trim();
  $("#session-error").textContent = "";
  try {
    renderSession(await api("GET", `/sessions/${encodeURIComponent(id)}`));
  } catch (e) {
    $("#session").hidden = true;
    $("#session-error").textContent = e.message;
  }
}

function renderSession(s) {
  $("#session").hidden = false;
  $("#session-summary").textContent =
    `${s.id}: version ${s.version}, ${s.active ? "active" : "ended"}, debug ${s.debug ? "on" : "off"}, ` +
    `updated ${new Date(s.updatedAt).toISOString()}, expires ${new Date(s.expiresAt).toISOString()}`;
  const toggle = $("#debug-toggle");
  toggle.textContent = s.debug ? "Switch debug off" : "Switch debug on";
  toggle.onclick = async () => {
    try {
      renderSession(await api("PUT", `/sessions/${s.id}/debug`, JSON.stringify({ debug: !s.debug })));
    } catch (e) {
      $("#session-error").textContent = e.message;
    }
  };
  $("#namespaces").replaceChildren(
    ...Object.entries(s.namespaces).map(([ns, values]) =>
      el(
        "table",
        { class: "namespace", "data-namespace": ns },
        el("caption", {}, ns),
        el(
          "tbody",
          {},
          Object.entries(values).map(([k, v]) =>
            el("tr", {}, el("td", { class: "mono" }, k), el("td", { class: "mono" }, JSON.stringify(v.value))),
          ),
        ),
      ),
    ),
  );
  $("#traces-hint").textContent = s.debug
    ? `The last ${s.traces.length} of at most 20 edits' cycles, newest first.`
    : "Switch debug on to keep the trace of each edit's cycle.";
  $("#traces").replaceChildren(...[...s.traces].reverse().map(renderTrace));
}

function renderTrace(t) {
  const calls = t.rounds.flatMap((r) => r.calls);
  const longest = Math.max(1, ...calls.map((c) => c.micros));
  const when = new Date(t.at).toISOString();
  return el(
    "div",
    { class: "trace" },
    el(
      "h4",
      {},
      `${when}: ${t.created ? "create" : "edit"}, ${t.rounds.length} round(s), ${t.micros} µs` +
        (t.loop_warning ? ", stopped at max_rounds" : "") +
        (t.truncated ? " (inputs and outputs left out: too large)" : ""),
    ),
    t.rounds.map((r) =>
      el(
        "div",
        { class: "round", "data-round": r.number },
        el("span", { class: "label" }, `round ${r.number}`),
        r.calls.map((c) => {
          const kind = c.timed_out ? "timed-out" : c.rejected ? "rejected" : c.error ? "failed" : "ok";
          const title = [
            `${c.app}: ${c.micros} µs`,
            c.error ? `error: ${c.error}` : null,
            `input: ${JSON.stringify(c.input)}`,
            `output: ${JSON.stringify(c.output)}`,
            c.dropped.length ? `dropped (undeclared): ${c.dropped.join(", ")}` : null,
          ]
            .filter(Boolean)
            .join("\n");
          const bar = el("span", { class: "bar" });
          bar.style.width = `${Math.max(2, Math.round((160 * c.micros) / longest))}px`;
          return el("span", { class: `call ${kind}`, title, "data-app": c.app }, `${c.app} ${c.micros} µs`, bar);
        }),
        (r.skipped || []).map((s) =>
          el(
            "span",
            { class: "skipped", title: `not called: ${s.condition} does not hold`, "data-app": s.app },
            `${s.app} skipped (${s.condition})` + (s.removed.length ? `, removed ${s.removed.join(", ")}` : ""),
          ),
        ),
      ),
    ),
  );
}

// ---- live metrics -----------------------------------------------------------------------------

/** Prometheus text: the samples of `name`, as {labels, value}. */
function samples(text, name) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = line.match(/^([a-z_]+)(?:\{(.*)\})? ([0-9.eE+-]+)$/);
    if (!m || m[1] !== name) continue;
    const labels = {};
    for (const pair of (m[2] || "").matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

async function pollMetrics() {
  clearTimeout(state.timer);
  try {
    const response = await fetch("/metrics");
    if (!response.ok) {
      $("#metrics-hint").textContent = "Metrics are not served on this address (see `metrics_listen`).";
      return;
    }
    const text = await response.text();
    const now = performance.now();
    const previous = state.metrics;
    state.metrics = { text, at: now };
    const rate = (name, key, value) => {
      if (!previous) return "";
      const before = samples(previous.text, name).find((s) => JSON.stringify(s.labels) === key);
      const seconds = (now - previous.at) / 1000;
      return before && seconds > 0 ? ((value - before.value) / seconds).toFixed(1) : "";
    };
    $("#metrics-hint").textContent = `Read from /metrics every 2 s; last ${new Date().toLocaleTimeString()}.`;
    $("#requests tbody").replaceChildren(
      ...samples(text, "sessiond_http_requests_total").map((s) =>
        el(
          "tr",
          {},
          el("td", { class: "mono" }, s.labels.route || ""),
          el("td", {}, s.labels.method || ""),
          el("td", {}, s.labels.status || ""),
          el("td", {}, String(s.value)),
          el("td", {}, rate("sessiond_http_requests_total", JSON.stringify(s.labels), s.value)),
        ),
      ),
    );
    const mine = (s) => s.labels.account === state.account;
    const count = (name, app) =>
      samples(text, name).find((s) => mine(s) && s.labels.app === app)?.value ?? 0;
    $("#app-metrics tbody").replaceChildren(
      ...samples(text, "sessiond_app_calls_total")
        .filter(mine)
        .map((s) =>
          el(
            "tr",
            { "data-app": s.labels.app },
            el("td", {}, s.labels.app),
            el("td", {}, String(s.value)),
            el("td", {}, String(count("sessiond_app_failures_total", s.labels.app))),
            el("td", {}, String(count("sessiond_app_timeouts_total", s.labels.app))),
            el("td", {}, rate("sessiond_app_calls_total", JSON.stringify(s.labels), s.value)),
          ),
        ),
    );
  } catch (e) {
    $("#metrics-hint").textContent = `Metrics unreadable: ${e.message}`;
  }
  state.timer = setTimeout(pollMetrics, 2000);
}

// ---- wiring -----------------------------------------------------------------------------------

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#sign-in-error").textContent = "";
  try {
    await signIn($("#token").value, $("#account").value.trim());
  } catch (e) {
    state.token = null;
    $("#sign-in-error").textContent =
      e.status === 401 ? "That is not the admin token." : e.message;
  }
});
$("#sign-out").addEventListener("click", signOut);
$("#app-form").addEventListener("submit", submitApp);
$("#session-form").addEventListener("submit", openSession);
$("#account").value = state.account;
if (state.token) {
  signIn(state.token, state.account).catch(() => sessionStorage.clear());
}
