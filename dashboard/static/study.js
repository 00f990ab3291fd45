// The study page: summary, Pareto front (selectable axes, 3-D for three objectives),
// hypervolume and best-so-far history, parameter importances, a sortable paginated table
// of trials, the selected trial's detail, and stop / resume / delete.
import {
  ACTIVE, api, arrow, badge, el, errorBox, fmtBytes, fmtDuration, fmtValue, plot, poll, progressBar, renderHeader,
  ApiError, responseJson,
} from "./common.js";
import { renderTrial } from "./trial.js";

const main = document.getElementById("main");
const studyId = main.dataset.study;
const base = `/api/v1/studies/${encodeURIComponent(studyId)}`;
const figureBase = `/ui/api/studies/${encodeURIComponent(studyId)}`;
const TRIAL_PAGE = 10000;

const S = {
  detail: null, trials: null, firstPage: null, allTrials: null, front: new Set(), frontPoints: [], axes: null,
  complete: -1, status: null,
  sort: { key: "number", desc: false }, page: 0, pageSize: 25, stateFilter: "", paretoOnly: false,
  selected: null, importancesAt: -1, clickBound: false,
};

const $ = (id) => document.getElementById(id);

// -- data ------------------------------------------------------------------------------------------
const FINAL = new Set(["complete", "fail", "pruned"]);

// All trials (brief), in number order. Finished trials never change, so a refresh asks only
// from the first one that had not finished.
async function loadTrials() {
  const known = S.trials ?? [];
  let from = known.findIndex((t) => !FINAL.has(t.state));
  if (from < 0) from = known.length;
  const items = known.slice(0, from);
  for (let offset = from; ; offset += TRIAL_PAGE) {
    const page = await api(`${base}/trials?brief=true&limit=${TRIAL_PAGE}&offset=${offset}`);
    items.push(...page.items);
    if (offset + TRIAL_PAGE >= page.total) return items;
  }
}

// Until every trial is loaded (in the background, after the first paint) the table shows
// the first page in number order, as the server pages it; sorting and filtering wait for
// the whole list.
function loadAllTrials() {
  if (!S.allTrials) {
    S.allTrials = loadTrials().then((trials) => { S.trials = trials; return trials; });
  }
  return S.allTrials;
}

function figureUrl(include) {
  const query = new URLSearchParams({ include });
  if (S.axes) query.set("axes", S.axes.join(","));
  return `${figureBase}/figures?${query}`;
}

// -- summary and actions ---------------------------------------------------------------------------
function renderSummary(detail) {
  S.detail = detail;
  $("study-status").replaceChildren(badge(detail.status));
  const best = new Map(detail.best.map((b) => [b.objective, b]));
  const stat = (k, v) => el("div", {}, el("span", { class: "k" }, k), el("span", { class: "v" }, v));
  const t = detail.timings;
  $("summary").replaceChildren(
    el("div", { class: "stats" },
      el("div", {}, el("span", { class: "k" }, "progress"), progressBar(detail.progress, detail.status, true)),
      stat("task", detail.task), stat("sampler", detail.sampler),
      stat("Pareto front", `${detail.front_size} trials`),
      stat("hypervolume", detail.hypervolume == null ? "–" : detail.hypervolume.toPrecision(4)),
      stat("elapsed", fmtDuration(t.elapsed_s)), stat("mean trial", fmtDuration(t.mean_trial_s)),
      stat("runs", String(detail.runs))),
    el("div", { class: "stats" }, detail.objectives.map((o) => {
      const b = best.get(o.name);
      return stat(`best ${o.name} ${arrow(o.direction)}`, b
        ? el("a", { href: `#trial=${b.trial_number}`, onclick: (e) => { e.preventDefault(); selectTrial(b.trial_number); } },
          `${fmtValue(o.name, b.value)} (#${b.trial_number})`) : "–");
    })),
    el("div", { class: "muted small" },
      `${detail.progress.running} running · ${detail.progress.waiting} waiting · ${detail.progress.failed} failed · `
      + `${detail.progress.pruned} pruned · ${detail.layers.length} layers · created ${new Date(t.created_at).toLocaleString()}`));
  $("study-error").replaceChildren(...(detail.error ? [el("div", { class: "error" }, detail.error)] : []));
  // a study made by paretoml.search is read here only: its model lives in the user's Python process
  const readOnly = detail.source === "python";
  if (readOnly && !$("python-note")) {
    $("study-error").after(el("div", { class: "muted small", id: "python-note" },
      "Made by paretoml.search: read-only here. Resume it, and export its trials (paretoml.export), from Python."));
  }
  $("stop").disabled = readOnly || !["queued", "running"].includes(detail.status);
  $("resume").disabled = readOnly || !["stopped", "failed"].includes(detail.status);
  $("delete").disabled = ACTIVE.has(detail.status);
}

async function act(action) {
  const buttons = ["stop", "resume", "delete"].map($);
  buttons.forEach((b) => { b.disabled = true; });
  try {
    if (action === "delete") {
      if (!confirm(`Delete study ${studyId} and all its trials?`)) { renderSummary(S.detail); return; }
      await api(base, { method: "DELETE" });
      location.href = "/";
      return;
    }
    await api(`${base}/${action}`, { method: "POST" });
    await refresh(true);
  } catch (error) {
    $("study-error").replaceChildren(errorBox(error));
    renderSummary(S.detail);
  }
}

// -- Pareto front ----------------------------------------------------------------------------------
function renderAxisControls(objectives, chosen, meta = {}) {
  const holder = $("axes");
  if (objectives.length < 2) { holder.replaceChildren(); return; }
  const names = objectives.map((o) => o.name);
  const select = (id, value, allowNone) => el("select", { id, "aria-label": id },
    allowNone ? el("option", { value: "" }, "– (2-D)") : null,
    names.map((n) => el("option", { value: n, selected: n === value }, n)));
  const controls = [el("label", {}, "x", select("axis-x", chosen[0])), el("label", {}, "y", select("axis-y", chosen[1]))];
  if (names.length >= 3) controls.push(el("label", {}, "z", select("axis-z", chosen[2] ?? "", true)));
  if (meta.three_d_limited) {
    controls.push(el("span", { class: "muted small", id: "three-d-note",
      title: "A 3-D scatter of this many points is slow to draw; choose z for it." },
    `2-D: ${meta.n_points.toLocaleString()} points`));
  }
  holder.replaceChildren(...controls);
  holder.querySelectorAll("select").forEach((s) => s.addEventListener("change", onAxesChange));
}

async function onAxesChange(event) {
  const ids = ["axis-x", "axis-y", "axis-z"];
  const values = ids.map((id) => $(id)?.value ?? "");
  // choosing an objective already on another axis swaps the two
  const changed = ids.indexOf(event.target.id);
  const previous = S.axes ?? [];
  values.forEach((v, i) => {
    if (i !== changed && v && v === values[changed]) {
      values[i] = previous[changed] ?? "";
      $(ids[i]).value = values[i];
    }
  });
  S.axes = values.filter(Boolean);
  $("three-d-note")?.remove();
  await refreshPareto();
}

async function refreshPareto() {
  const figures = await api(figureUrl("pareto"));
  await drawPareto(figures.pareto);
}

async function drawPareto(figure) {
  const node = $("pareto");
  S.axes = figure.layout?.meta?.axes ?? S.axes;
  node.dataset.frontSize = String(figure.layout?.meta?.front_size ?? 0);
  node.dataset.axes = (S.axes ?? []).join(",");
  await plot(node, figure);
  if (!S.clickBound && node.on) {
    node.on("plotly_click", (event) => {
      const point = event.points?.[0];
      if (!point) return;
      const number = frontTrialAt(point) ?? trialOf(point);
      if (Number.isFinite(number)) selectTrial(number);
    });
    S.clickBound = true;
  }
}

function trialOf(point) {
  const row = point.customdata ?? point.fullData?.customdata?.[point.pointNumber];
  return Number(Array.isArray(row) || ArrayBuffer.isView(row) ? row[0] : row);
}

// Points of several trials can coincide (equal values, or equal on the axes shown); a click
// there opens the trial on the Pareto front, which is the one drawn on top.
function frontTrialAt(point) {
  if (point.fullData?.meta?.role === "pareto" || !S.axes || S.axes.length < 2) return null;
  const coordinates = [point.x, point.y, point.z].slice(0, S.axes.length);
  const hit = S.frontPoints.find((p) => S.axes.every((name, i) => p.values[name] === coordinates[i]));
  return hit ? hit.trial_number : null;
}

// -- trials table ----------------------------------------------------------------------------------
function columns() {
  const objectives = S.detail?.objectives ?? [];
  return [
    { key: "number", label: "#", num: true, get: (t) => t.number, show: (t) => String(t.number) },
    { key: "state", label: "state", get: (t) => t.state, show: (t) => badge(t.state) },
    ...objectives.map((o) => ({
      key: `v:${o.name}`, label: `${o.name} ${arrow(o.direction)}`, num: true,
      get: (t) => t.values?.[o.name] ?? null, show: (t) => fmtValue(o.name, t.values?.[o.name]),
    })),
    { key: "feasible", label: "feasible", get: (t) => (t.state === "complete" ? (t.feasible ? 1 : 0) : null),
      show: (t) => (t.state === "complete" ? (t.feasible ? "✓" : badge("infeasible")) : "") },
    { key: "pareto", label: "Pareto", get: (t) => (S.front.has(t.number) ? 1 : 0),
      show: (t) => (S.front.has(t.number) ? badge("front", "pareto") : "") },
    { key: "duration", label: "duration", num: true, get: (t) => t.duration_s, show: (t) => fmtDuration(t.duration_s) },
  ];
}

function sortedRows() {
  const cols = columns();
  const col = cols.find((c) => c.key === S.sort.key) ?? cols[0];
  let rows = S.trials;
  if (S.stateFilter) rows = rows.filter((t) => t.state === S.stateFilter);
  if (S.paretoOnly) rows = rows.filter((t) => S.front.has(t.number));
  const sign = S.sort.desc ? -1 : 1;
  return rows.slice().sort((a, b) => {
    const x = col.get(a), y = col.get(b);
    if (x === y) return a.number - b.number;
    if (x === null || x === undefined) return 1; // missing values last, either way
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * sign;
  });
}

function renderTableControls() {
  $("table-controls").replaceChildren(
    el("label", {}, "state", el("select", { id: "state-filter", onchange: (e) => { S.stateFilter = e.target.value; S.page = 0; renderTable(); } },
      ["", "complete", "running", "waiting", "fail", "pruned"].map((s) => el("option", { value: s, selected: s === S.stateFilter }, s || "all")))),
    el("label", {}, el("input", { type: "checkbox", id: "pareto-only", checked: S.paretoOnly,
      onchange: (e) => { S.paretoOnly = e.target.checked; S.page = 0; renderTable(); } }), "Pareto front only"),
    el("label", {}, "rows", el("select", { id: "page-size", onchange: (e) => { S.pageSize = Number(e.target.value); S.page = 0; renderTable(); } },
      [25, 50, 100].map((n) => el("option", { value: n, selected: n === S.pageSize }, String(n))))));
}

function firstPageView() {
  return !S.trials && S.firstPage && S.sort.key === "number" && !S.sort.desc && !S.stateFilter && !S.paretoOnly
    && S.page === 0 && (S.pageSize <= S.firstPage.items.length || S.firstPage.items.length === S.firstPage.total);
}

function renderTable() {
  const cols = columns();
  if (!S.trials && !firstPageView()) {
    $("trials").tBodies[0].replaceChildren(el("tr", {}, el("td", { colspan: cols.length, class: "placeholder" },
      "loading all trials…")));
    loadAllTrials().then(renderTable).catch((error) => $("trials").tBodies[0].replaceChildren(
      el("tr", {}, el("td", { colspan: cols.length }, errorBox(error)))));
    return;
  }
  const rows = S.trials ? sortedRows() : S.firstPage.items;
  const total = S.trials ? rows.length : S.firstPage.total;
  const pages = Math.max(1, Math.ceil(total / S.pageSize));
  S.page = Math.min(S.page, pages - 1);
  const shown = rows.slice(S.page * S.pageSize, (S.page + 1) * S.pageSize);
  const table = $("trials");
  table.tHead.replaceChildren(el("tr", {}, cols.map((c) => el("th", {
    class: `sortable${c.num ? " num" : ""}`, dataset: { key: c.key },
    "aria-sort": S.sort.key === c.key ? (S.sort.desc ? "descending" : "ascending") : null,
    onclick: () => {
      S.sort = S.sort.key === c.key ? { key: c.key, desc: !S.sort.desc } : { key: c.key, desc: false };
      S.page = 0;
      renderTable();
    },
  }, c.label, S.sort.key === c.key ? (S.sort.desc ? " ▼" : " ▲") : ""))));
  table.tBodies[0].replaceChildren(...(shown.length ? shown.map((t) => el("tr", {
    class: `clickable${t.number === S.selected ? " selected" : ""}`, dataset: { trial: t.number },
    onclick: () => selectTrial(t.number),
  }, cols.map((c) => el("td", { class: c.num ? "num" : null }, c.show(t)))))
    : [el("tr", {}, el("td", { colspan: cols.length, class: "placeholder" }, "no trials"))]));
  const from = total ? S.page * S.pageSize + 1 : 0;
  const go = (page) => () => { S.page = page; renderTable(); };
  $("trials-pager").replaceChildren(
    el("span", { class: "muted" }, `${from}–${S.page * S.pageSize + shown.length} of ${total}`),
    el("button", { disabled: S.page === 0, onclick: go(0) }, "«"),
    el("button", { disabled: S.page === 0, onclick: go(S.page - 1), id: "prev-page" }, "‹"),
    el("span", {}, `page ${S.page + 1} / ${pages}`),
    el("button", { disabled: S.page >= pages - 1, onclick: go(S.page + 1), id: "next-page" }, "›"),
    el("button", { disabled: S.page >= pages - 1, onclick: go(pages - 1) }, "»"));
}

// -- selection ---------------------------------------------------------------------------------------
function selectTrial(number) {
  S.selected = number;
  history.replaceState(null, "", `#trial=${number}`);
  document.querySelectorAll("#trials tbody tr").forEach((tr) => tr.classList.toggle("selected", Number(tr.dataset.trial) === number));
  $("trial-card").scrollIntoView({ block: "nearest" });
  return renderTrial($("trial"), {
    studyId, number, objectives: S.detail?.objectives, reference: S.detail?.reference, front: S.front,
    exportable: S.detail?.source !== "python",
  });
}

// -- importances ------------------------------------------------------------------------------------
async function refreshImportances() {
  const complete = S.detail?.progress.complete ?? 0;
  S.importancesAt = complete;
  try {
    const result = await api(`${figureBase}/figures/importances`);
    $("importances").replaceChildren();
    await plot($("importances"), result.importances);
    const doc = result.document;
    $("importance-note").textContent = doc.n_trials ? `${doc.evaluator} over ${doc.n_trials} completed trials` : "";
  } catch (error) {
    $("importances").replaceChildren(errorBox(error));
  }
  $("importances").dataset.ready = "1";
}

// -- refresh ------------------------------------------------------------------------------------------
async function refresh(force = false) {
  const detail = await api(base);
  const moved = detail.progress.complete !== S.complete || detail.status !== S.status;
  renderSummary(detail);
  if (moved || force) {
    S.allTrials = null;
    const [figures, trials, frontier] = await Promise.all([api(figureUrl("pareto,history")), loadAllTrials(),
      api(`${base}/frontier`)]);
    S.complete = detail.progress.complete;
    S.status = detail.status;
    S.trials = trials;
    S.front = new Set(frontier.points.map((p) => p.trial_number));
    S.frontPoints = frontier.points;
    await Promise.all([drawPareto(figures.pareto), plot($("history"), figures.history)]);
    renderTable();
    const grown = S.complete - S.importancesAt;
    if (grown > 0 && (grown >= Math.max(5, 0.1 * S.importancesAt) || !ACTIVE.has(detail.status))) refreshImportances();
  }
  return ACTIVE.has(detail.status) ? 2500 : 15000;
}

async function start() {
  renderHeader("study");
  ["stop", "resume", "delete"].forEach((a) => $(a).addEventListener("click", () => act(a)));
  const pre = window.paretomlPrefetch;
  let detail;
  let figures;
  let frontier;
  try {
    [detail, figures, frontier, S.firstPage] = await Promise.all([
      responseJson(pre.detail), responseJson(pre.figures), responseJson(pre.frontier), responseJson(pre.firstTrials)]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      // nothing of this study will come: say so instead of leaving placeholders that never fill
      $("main").replaceChildren($("main").querySelector("h1"), el("div", { class: "card not-found", id: "not-found",
        role: "alert" }, el("p", {}, `There is no study named “${studyId}” on this server.`),
      el("p", {}, el("a", { href: "/" }, "← all studies"))));
      $("study-status").replaceChildren(badge("not found", "failed"));
      document.title = `${studyId}: not found`;
    } else {
      $("summary").replaceChildren(errorBox(error));
      $("importances").replaceChildren(el("div", { class: "placeholder" }, "–"));
    }
    ["stop", "resume", "delete"].forEach((a) => { $(a).disabled = true; });
    document.body.dataset.ready = "error";
    return;
  }
  renderSummary(detail);
  S.complete = detail.progress.complete;
  S.status = detail.status;
  S.front = new Set(frontier.points.map((p) => p.trial_number));
  S.frontPoints = frontier.points;
  const meta = figures.pareto.layout?.meta ?? {};
  renderAxisControls(detail.objectives, meta.axes ?? [], meta);
  renderTableControls();
  renderTable();
  await Promise.all([drawPareto(figures.pareto), plot($("history"), figures.history)]);
  performance.mark("paretoml-ready");
  document.body.dataset.ready = "1";
  // interactive: the frame with the charts is painted and the main thread is free again
  requestAnimationFrame(() => setTimeout(() => {
    performance.mark("paretoml-interactive");
    document.body.dataset.interactive = "1";
    loadAllTrials().then(() => { if (!firstPageView()) renderTable(); }).catch((e) => console.warn(e));
    refreshImportances();
  }, 0));
  const hash = /^#trial=(\d+)$/.exec(location.hash);
  if (hash) selectTrial(Number(hash[1]));
  poll(() => refresh(), ACTIVE.has(detail.status) ? 2500 : 15000);
}

start();
// exported for the benchmark and tests: what the page shows, without reading the DOM
window.paretoml = { state: S, selectTrial, fmtBytes, loadAllTrials };
