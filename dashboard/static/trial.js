// One trial: its objectives and how each was obtained, its per-layer configuration as a
// chart over the model's layers, its other knobs and a download of its config as JSON.
import { api, badge, download, el, errorBox, fmtDuration, fmtValue, plot } from "./common.js";

let current = null; // the request in flight, so a later click wins

// exportable: false for a study made by paretoml.search (the server cannot rebuild its model)
export async function renderTrial(container, { studyId, number, objectives, reference = {}, front = null,
  standalone = false, exportable = true }) {
  const token = {};
  current = token;
  container.dataset.trial = String(number);
  container.dataset.ready = "";
  container.replaceChildren(el("div", { class: "placeholder" }, `loading trial ${number}…`));
  const base = `/api/v1/studies/${encodeURIComponent(studyId)}`;
  let trial, figure;
  try {
    [trial, figure] = await Promise.all([
      api(`${base}/trials/${number}`),
      api(`/ui/api/studies/${encodeURIComponent(studyId)}/trials/${number}/figures/layers`),
    ]);
  } catch (error) {
    if (current === token) container.replaceChildren(errorBox(error));
    return;
  }
  if (current !== token) return;

  const names = objectives ? objectives.map((o) => o.name) : Object.keys(trial.values || {});
  const onFront = front ? front.has(trial.number) : null;
  const title = el("div", { class: "row" },
    el("strong", { style: { fontSize: "16px" } }, `Trial #${trial.number}`),
    badge(trial.state), trial.state === "complete" ? badge(trial.feasible ? "feasible" : "infeasible") : null,
    onFront ? badge("Pareto front", "pareto") : null,
    trial.note ? el("span", { class: "muted" }, trial.note) : null,
    el("span", { style: { marginLeft: "auto" }, class: "row" },
      el("button", { type: "button", id: "download-config", disabled: !trial.config,
        onclick: () => download(`${studyId}-trial-${trial.number}-config.json`, trial.config) }, "Download config JSON"),
      trial.state === "complete" && exportable
        ? el("a", { class: "button", id: "download-model", download: "",
            title: "packed weights (safetensors) and a manifest; the model is rebuilt on the server, a few seconds",
            href: `/api/v1/studies/${encodeURIComponent(studyId)}/trials/${trial.number}/export` },
          "Download compressed model")
        : null,
      standalone ? null : el("a", { href: `/studies/${encodeURIComponent(studyId)}/trials/${trial.number}` }, "open ↗")));

  const objectiveRows = names.flatMap((name) => {
    const how = trial.objectives_how?.[name];
    const value = trial.values?.[name];
    const ref = reference?.[name];
    const detail = how?.detail == null ? "" : typeof how.detail === "string" ? how.detail : JSON.stringify(how.detail);
    return [
      el("tr", { class: "objective", dataset: { objective: name } },
        el("td", {}, name),
        el("td", { class: "num" }, el("strong", {}, fmtValue(name, value))),
        el("td", { class: "num muted" }, typeof ref === "number" ? fmtValue(name, ref) : "–"),
        el("td", {}, how ? badge(how.how, how.how) : el("span", { class: "muted" }, "–"))),
      detail ? el("tr", { class: "how-detail" }, el("td", { colspan: 4, class: "muted small" }, detail)) : null,
    ];
  });
  const objectivesTable = el("table", { class: "objectives" },
    el("thead", {}, el("tr", {}, el("th", {}, "objective"), el("th", { class: "num" }, "value"),
      el("th", { class: "num" }, "uncompressed"), el("th", {}, "how it was obtained"))),
    el("tbody", {}, objectiveRows));

  const config = trial.config || {};
  const facts = [
    ["duration", fmtDuration(trial.duration_s)],
    ["constraints", trial.constraints?.length ? trial.constraints.map((c) => `${c <= 0 ? "✓" : "✗"} ${c}`).join(", ") : null],
    ["batch size", config.batch_size],
    ["learning rate", config.learning_rate],
    ...Object.entries(config.hparams || {}).map(([k, v]) => [k, JSON.stringify(v)]),
    ["worker", trial.worker ? [trial.worker.worker, trial.worker.node && String(trial.worker.node).slice(0, 16),
      trial.worker.pid && `pid ${trial.worker.pid}`].filter(Boolean).join(" · ") : null],
    ["error", trial.error],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  const chart = el("div", { class: "plot layer-chart", id: "layer-chart" });
  const hasCurve = Object.keys(trial.intermediate_values || {}).length > 0;
  const curve = hasCurve ? el("div", { class: "plot rung-curve", id: "rung-curve" }) : null;
  if (trial.stopped_at != null) facts.unshift(["stopped at", trial.rung_unit === "validation samples"
    ? `${trial.stopped_at} validation samples scored (pruned)`
    : `fine-tune step ${trial.stopped_at} (pruned)`]);
  // replaceChildren writes a null child as the text "null": leave out the parts a trial lacks
  container.replaceChildren(...[
    title, objectivesTable,
    el("div", { class: "kv" }, facts.map(([k, v]) => [el("span", { class: "k" }, k), el("span", {}, String(v))])),
    curve, chart,
    el("details", {}, el("summary", {}, "Optuna parameters and the full config"),
      el("pre", { class: "json" }, JSON.stringify({ params: trial.params, config: trial.config }, null, 2)))]
    .filter((part) => part != null));
  await plot(chart, figure.layers);
  if (curve) await plot(curve, figure.curve);
  if (current === token) container.dataset.ready = "1";
}
