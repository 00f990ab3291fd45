// The page of one trial: the same panel as on the study page, full width.
import { api, el, errorBox, renderHeader } from "./common.js";
import { renderTrial } from "./trial.js";

renderHeader("study");
const main = document.getElementById("main");
const studyId = main.dataset.study;
const number = Number(main.dataset.trial);
const container = document.getElementById("trial");
const base = `/api/v1/studies/${encodeURIComponent(studyId)}`;

Promise.all([api(base), api(`${base}/frontier`)])
  .then(([detail, frontier]) => renderTrial(container, {
    studyId, number, objectives: detail.objectives, reference: detail.reference,
    front: new Set(frontier.points.map((p) => p.trial_number)), standalone: true,
    exportable: detail.source !== "python",
  }))
  .then(() => { document.body.dataset.ready = "1"; })
  .catch((error) => container.replaceChildren(errorBox(error), el("a", { href: "/" }, "back to the studies")));
