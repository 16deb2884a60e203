// portent's web UI: one document for every page; the path says which page to draw.
// Plain DOM, no framework and no build step. Every text from the API goes in through
// textContent, never innerHTML: labels, log lines and events are untrusted.
"use strict";

const TOKEN_KEY = "portent.token";
// The default alerting threshold: points at or above it are marked as anomalies.
const THRESHOLD = 0.8;

// el("a", {href: "/"}, "text", child…): an element with attributes and children.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtTime(ms) {
  if (ms === undefined || ms === null) return "";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function fmtNum(x) {
  if (x === undefined || x === null || Number.isNaN(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(3);
  return Number(x.toPrecision(5)).toString();
}

function scoreBadge(s) {
  const cls = s >= THRESHOLD ? "score high" : s >= 0.5 ? "score mid" : "score";
  return el("span", { class: cls }, s.toFixed(2));
}

function reasonText(r) {
  return r ? r.replace(/_/g, " ") : "";
}

async function getJson(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = null;
  }
  return { status: res.status, body };
}

function apiError(what, r) {
  const msg = r.body && r.body.error ? r.body.error : "HTTP " + r.status;
  return el("p", { class: "error" }, what + ": " + msg);
}

// A sparkline as inline SVG: cheap enough for a hundred rows, unlike a chart each.
function sparkline(values) {
  const w = 120, h = 28;
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const vs = values.filter((v) => v !== null && Number.isFinite(v));
  if (vs.length < 2) return svg;
  const lo = Math.min(...vs), hi = Math.max(...vs);
  const span = hi - lo || 1;
  const step = w / (values.length - 1);
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const x = (i * step).toFixed(1);
    const y = (h - 2 - ((v - lo) / span) * (h - 4)).toFixed(1);
    d += (pen ? "L" : "M") + x + " " + y + " ";
    pen = true;
  });
  const path = document.createElementNS(svgNs, "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "#0b5cad");
  path.setAttribute("stroke-width", "1.2");
  svg.append(path);
  return svg;
}

function stateSpan(state) {
  return el("span", { class: "state " + state }, state);
}

// ---- overview ----

async function overview(main) {
  main.dataset.page = "overview";
  document.title = "portent: overview";
  const [series, open, all] = await Promise.all([
    getJson("/api/v1/series?limit=100"),
    getJson("/api/v1/incidents?state=open"),
    getJson("/api/v1/incidents?state=resolved"),
  ]);
  main.replaceChildren();

  main.append(el("h2", {}, "Open incidents"));
  if (open.status === 404) {
    main.append(el("p", { class: "muted" }, "Incidents are off (incidents.enabled: false)."));
  } else if (open.status !== 200) {
    main.append(apiError("incidents", open));
  } else {
    main.append(incidentTable(open.body.incidents, "No open incident."));
    if (all.status === 200 && all.body.incidents.length) {
      main.append(el("h2", {}, "Recently resolved"));
      main.append(incidentTable(all.body.incidents.slice(0, 10), ""));
    }
  }

  main.append(el("h2", {}, "Series by current score"));
  if (series.status !== 200) {
    main.append(apiError("series", series));
    main.dataset.series = "0";
    return;
  }
  const list = series.body.series;
  main.dataset.series = String(list.length);
  if (!list.length) {
    main.append(el("p", { class: "muted" }, "Nothing scored yet."));
    return;
  }
  main.append(
    el("p", { class: "muted" }, `The top ${list.length} of ${series.body.total} series.`)
  );
  const rows = list.map((s, i) =>
    el(
      "tr",
      { "data-series-id": s.id },
      el("td", { class: "num" }, i + 1),
      el("td", { class: "series" }, el("a", { href: "/ui/series/" + s.id }, s.series || "{}")),
      el("td", {}, s.query + " / " + s.model),
      el("td", {}, scoreBadge(s.score)),
      el("td", {}, reasonText(s.reason)),
      el("td", { class: "num" }, fmtNum(s.value)),
      el("td", {}, sparkline(s.sparkline))
    )
  );
  main.append(
    el(
      "table",
      { id: "series" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["#", "series", "query / model", "score", "reason", "value", "recent"].map((h) =>
            el("th", {}, h)
          )
        )
      ),
      el("tbody", {}, rows)
    )
  );
}

function incidentTable(incidents, empty) {
  if (!incidents.length) return el("p", { class: "muted" }, empty);
  const rows = incidents.map((i) =>
    el(
      "tr",
      { "data-incident-id": i.id },
      el("td", {}, el("a", { href: "/ui/incidents/" + encodeURIComponent(i.id) }, i.id)),
      el("td", {}, stateSpan(i.state)),
      el("td", {}, fmtTime(i.started_at.ms)),
      el("td", { class: "num" }, i.series),
      el(
        "td",
        { class: "series" },
        i.top_cause
          ? [i.top_cause.series, " ", el("span", { class: "muted" }, reasonText(i.top_cause.reason))]
          : ""
      )
    )
  );
  return el(
    "table",
    { class: "incidents" },
    el(
      "thead",
      {},
      el("tr", {}, ["incident", "state", "started", "series", "top cause"].map((h) => el("th", {}, h)))
    ),
    el("tbody", {}, rows)
  );
}

// ---- series ----

async function seriesPage(main, id) {
  main.dataset.page = "series";
  const r = await getJson("/api/v1/series/" + encodeURIComponent(id));
  main.replaceChildren();
  if (r.status !== 200) {
    main.append(el("h1", {}, "Series " + id), apiError("series", r));
    return;
  }
  const s = r.body;
  document.title = "portent: " + s.series;
  const latest = s.latest;
  main.append(
    el("h1", {}, s.series || "{}"),
    el(
      "dl",
      { class: "meta" },
      el("dt", {}, "query / model"),
      el("dd", {}, s.query + " / " + s.model),
      el("dt", {}, "latest"),
      el(
        "dd",
        {},
        latest
          ? [
              scoreBadge(latest.score),
              " ",
              reasonText(latest.reason),
              ` value ${fmtNum(latest.value)}, expected ${fmtNum(latest.yhat)} ` +
                `[${fmtNum(latest.yhat_lower)}, ${fmtNum(latest.yhat_upper)}] at ${fmtTime(latest.t)}`,
            ]
          : "expired"
      )
    )
  );
  const p = s.points;
  const chart = el("div", { id: "chart", "data-points": "0" });
  main.append(
    el("p", { class: "muted" }, "Drag across the chart to zoom in; double-click to zoom out."),
    chart
  );
  const drawn = drawChart(chart, p);
  chart.dataset.points = String(drawn);

  main.append(el("h2", {}, "Anomalies"));
  const marks = [];
  for (let i = p.t.length - 1; i >= 0; i--) {
    if (p.score[i] >= 0.5) marks.push(i);
  }
  if (!marks.length) {
    main.append(el("p", { class: "muted" }, "No point scored 0.5 or more in the kept history."));
  } else {
    main.append(
      el(
        "table",
        { id: "anomalies" },
        el(
          "thead",
          {},
          el("tr", {}, ["time", "value", "expected", "band", "score", "reason"].map((h) => el("th", {}, h)))
        ),
        el(
          "tbody",
          {},
          marks.slice(0, 200).map((i) =>
            el(
              "tr",
              {},
              el("td", {}, fmtTime(p.t[i])),
              el("td", { class: "num" }, fmtNum(p.value[i])),
              el("td", { class: "num" }, fmtNum(p.yhat[i])),
              el("td", { class: "num" }, `[${fmtNum(p.yhat_lower[i])}, ${fmtNum(p.yhat_upper[i])}]`),
              el("td", {}, scoreBadge(p.score[i])),
              el("td", {}, reasonText(p.reason[i]))
            )
          )
        )
      )
    );
  }
}

// Draws actual values, the expected band and line, and anomaly markers; returns how many
// actual values were drawn.
function drawChart(container, p) {
  const n = p.t.length;
  if (!n || typeof uPlot === "undefined") {
    container.append(el("p", { class: "muted" }, "No history kept for this series yet."));
    return 0;
  }
  const num = (v) => (v === null || !Number.isFinite(v) ? null : v);
  const xs = p.t.map((t) => t / 1000);
  const value = p.value.map(num);
  const lower = p.yhat_lower.map(num);
  const upper = p.yhat_upper.map(num);
  const yhat = p.yhat.map(num);
  const marked = value.map((v, i) => (p.score[i] >= THRESHOLD ? v : null));
  const drawn = value.filter((v) => v !== null).length;
  const width = Math.max(400, container.clientWidth - 12);
  const opts = {
    width,
    height: 360,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    // Room for values like 10,000 or 1.5e+9 on the y axis.
    axes: [{}, { size: 80 }],
    series: [
      {},
      { label: "lower", stroke: "rgba(11,92,173,0.35)", width: 1 },
      { label: "upper", stroke: "rgba(11,92,173,0.35)", width: 1 },
      { label: "expected", stroke: "#6b7785", width: 1, dash: [5, 4] },
      { label: "actual", stroke: "#1b1f24", width: 1.5 },
      {
        label: "anomaly",
        stroke: "#b42318",
        width: 0,
        paths: () => null,
        points: { show: true, size: 9, stroke: "#b42318", fill: "#b42318" },
      },
    ],
    bands: [{ series: [2, 1], fill: "rgba(11,92,173,0.12)" }],
    hooks: {
      // The visible time range, on the element: what a zoom changed, for tests and tools.
      setScale: [
        (u, key) => {
          if (key !== "x") return;
          container.dataset.xMin = String(u.scales.x.min);
          container.dataset.xMax = String(u.scales.x.max);
        },
      ],
    },
  };
  const plot = new uPlot(opts, [xs, lower, upper, yhat, value, marked], container);
  window.addEventListener("resize", () =>
    plot.setSize({ width: Math.max(400, container.clientWidth - 12), height: 360 })
  );
  return drawn;
}

// ---- incident ----

async function incidentPage(main, id) {
  main.dataset.page = "incident";
  const r = await getJson("/api/v1/incidents/" + encodeURIComponent(id));
  main.replaceChildren();
  if (r.status !== 200) {
    main.append(el("h1", {}, "Incident " + id), apiError("incident", r));
    return;
  }
  const pack = r.body.incident;
  const inc = pack.incident;
  document.title = "portent: incident " + inc.id;
  const scope = pack.scope || {};
  const scopeText = ["namespaces", "workloads", "services", "nodes", "pods"]
    .filter((k) => scope[k] && scope[k].length)
    .map((k) => k + ": " + scope[k].join(", "))
    .join("; ");
  main.append(
    el("h1", {}, "Incident " + inc.id),
    el(
      "dl",
      { class: "meta" },
      el("dt", {}, "state"),
      el("dd", {}, stateSpan(inc.state)),
      el("dt", {}, "series"),
      el("dd", {}, String(inc.series_total)),
      el("dt", {}, "scope"),
      el("dd", {}, scopeText || "–")
    )
  );

  main.append(el("h2", {}, "Feedback"));
  const state = el("span", { id: "feedback-state", "data-verdict": "" });
  const message = el("span", { class: "muted", id: "feedback-message" });
  const send = (verdict) => () => sendFeedback(inc.id, verdict, state, message);
  main.append(
    el(
      "div",
      { class: "feedback" },
      el("button", { id: "false-positive", class: "fp", onclick: send("false_positive") }, "False positive"),
      el("button", { id: "confirm", class: "confirm", onclick: send("confirmed") }, "Confirm"),
      state,
      message
    )
  );
  showFeedback(state, r.body.feedback);

  main.append(el("h2", {}, "Explanation"));
  main.append(el("pre", { class: "explanation" }, r.body.explanation || ""));

  const runbooks = r.body.runbooks || pack.runbooks;
  if (runbooks && runbooks.length) {
    main.append(el("h2", {}, "Runbook"));
    for (const rb of runbooks) {
      main.append(
        el("h3", {}, rb.title || rb.name || rb.id || "runbook"),
        el("ol", {}, (rb.steps || []).map((s) => el("li", {}, typeof s === "string" ? s : JSON.stringify(s)))),
        (rb.links || []).length
          ? el("ul", {}, rb.links.map((l) => el("li", {}, typeof l === "string" ? l : l.url || JSON.stringify(l))))
          : null
      );
    }
  }

  main.append(el("h2", {}, "Timeline"));
  const events = [];
  events.push([inc.started_at.ms, "started"]);
  if (inc.fired_at) events.push([inc.fired_at.ms, "firing"]);
  for (const s of pack.series) events.push([s.onset.ms, `onset of ${s.id} ${s.series} (${reasonText(s.reason) || "anomalous"})`]);
  events.push([inc.last_anomaly_at.ms, "last anomaly"]);
  if (inc.resolved_at) events.push([inc.resolved_at.ms, "resolved"]);
  events.sort((a, b) => a[0] - b[0]);
  main.append(el("ol", { class: "timeline" }, events.map(([t, what]) => el("li", {}, fmtTime(t) + " — " + what))));

  main.append(el("h2", {}, "Root-cause candidates"));
  const byId = new Map(pack.series.map((s) => [s.id, s]));
  // Each piece of evidence links to its series' chart when the server names its ID.
  const ids = r.body.series_ids || {};
  const seriesLink = (text, evidenceId) =>
    ids[evidenceId] ? el("a", { href: "/ui/series/" + encodeURIComponent(ids[evidenceId]) }, text) : text;
  if (!pack.candidates.length) {
    main.append(el("p", { class: "muted" }, "No candidate."));
  } else {
    main.append(
      el(
        "table",
        { id: "candidates" },
        el("thead", {}, el("tr", {}, ["#", "evidence", "series", "level", "onset", "rank"].map((h) => el("th", {}, h)))),
        el(
          "tbody",
          {},
          pack.candidates.map((c, i) => {
            const s = byId.get(c.evidence_id);
            return el(
              "tr",
              {},
              el("td", { class: "num" }, i + 1),
              el("td", {}, c.evidence_id),
              el("td", { class: "series" }, s ? seriesLink(s.series, c.evidence_id) : ""),
              el("td", {}, String(c.level)),
              el("td", {}, typeof c.onset === "number" ? fmtTime(c.onset) : s ? fmtTime(s.onset.ms) : ""),
              el("td", { class: "num" }, fmtNum(c.rank))
            );
          })
        )
      )
    );
  }

  main.append(el("h2", {}, "Evidence"));
  main.append(
    el(
      "table",
      { id: "evidence" },
      el(
        "thead",
        {},
        el("tr", {}, ["id", "series", "reason", "peak", "expected", "band", "max score", "samples"].map((h) => el("th", {}, h)))
      ),
      el(
        "tbody",
        {},
        pack.series.map((s) =>
          el(
            "tr",
            {},
            el("td", {}, s.id),
            el("td", { class: "series" }, seriesLink(s.series, s.id), el("div", { class: "muted" }, s.query + " / " + s.model)),
            el("td", {}, reasonText(s.reason)),
            el("td", { class: "num" }, fmtNum(s.peak.actual)),
            el("td", { class: "num" }, fmtNum(s.peak.expected)),
            el("td", { class: "num" }, `[${fmtNum(s.peak.lower)}, ${fmtNum(s.peak.upper)}]`),
            el("td", {}, scoreBadge(s.max_score)),
            el("td", { class: "num" }, s.anomalous_samples)
          )
        )
      )
    )
  );
  if (pack.correlated && pack.correlated.length) {
    main.append(
      el("h3", {}, "Correlated series"),
      el("ul", {}, pack.correlated.map((c) => el("li", {}, `${c.id} ${c.series} (${reasonText(c.reason) || "moved"})`)))
    );
  }
  for (const [key, title] of [["kubernetes_events", "Kubernetes events"], ["logs", "Log lines"]]) {
    if (pack[key] && pack[key].length) {
      main.append(el("h3", {}, title), el("pre", { class: "explanation" }, pack[key].map((x) => JSON.stringify(x)).join("\n")));
    }
  }
}

// Shows the latest verdict the server holds for the incident.
function showFeedback(state, feedback) {
  const last = feedback && feedback.length ? feedback[feedback.length - 1] : null;
  state.dataset.verdict = last ? last.verdict : "";
  state.textContent = last ? `${reasonText(last.verdict)} (by ${last.by})` : "no feedback yet";
}

async function sendFeedback(id, verdict, state, message) {
  const token = localStorage.getItem(TOKEN_KEY) || "";
  message.textContent = "sending…";
  message.className = "muted";
  const res = await fetch("/api/v1/incidents/" + encodeURIComponent(id) + "/feedback", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
    body: JSON.stringify({ verdict, by: "web-ui" }),
  });
  if (res.status !== 201) {
    const text = await res.text();
    message.textContent = `refused (${res.status}): ${text.trim()}` + (token ? "" : " — enter the API token above");
    message.className = "error";
    return;
  }
  // Read the state back from the server rather than trusting the click.
  const r = await getJson("/api/v1/incidents/" + encodeURIComponent(id));
  if (r.status === 200) showFeedback(state, r.body.feedback);
  message.textContent = "saved";
}

// ---- routing ----

async function route() {
  const input = document.getElementById("token");
  input.value = localStorage.getItem(TOKEN_KEY) || "";
  input.addEventListener("change", () => localStorage.setItem(TOKEN_KEY, input.value.trim()));

  const main = document.getElementById("app");
  const path = location.pathname;
  let m;
  try {
    if ((m = path.match(/^\/ui\/series\/([^/]+)$/))) await seriesPage(main, decodeURIComponent(m[1]));
    else if ((m = path.match(/^\/ui\/incidents\/([^/]+)$/))) await incidentPage(main, decodeURIComponent(m[1]));
    else await overview(main);
  } catch (e) {
    main.append(el("p", { class: "error" }, "The page failed to load: " + e));
  }
  // Tests (and people) can tell a finished page from one still loading.
  main.dataset.ready = "1";
}

route();
