// The study list: status, progress, task, sampler and best values of every study,
// refreshed by polling (every 2 s while a study is active, else every 10 s).
import { ACTIVE, api, arrow, badge, el, errorBox, fmtAge, fmtValue, poll, progressBar, renderHeader } from "./common.js";

const LIMIT = 50;
const state = { status: "", offset: 0, created: new URLSearchParams(location.search).get("created") };

function bestList(study) {
  const best = new Map(study.best.map((b) => [b.objective, b]));
  return el("ul", { class: "best-list" }, study.objectives.map((o) => {
    const b = best.get(o.name);
    return el("li", {}, `${o.name} ${arrow(o.direction)} `,
      b ? el("strong", {}, fmtValue(o.name, b.value)) : el("span", { class: "muted" }, "–"),
      b ? el("span", { class: "muted" }, ` · #${b.trial_number}`) : null);
  }));
}

function row(study) {
  const link = `/studies/${encodeURIComponent(study.id)}`;
  const tr = el("tr", { class: "clickable", dataset: { study: study.id } },
    el("td", {}, el("a", { href: link }, study.id)),
    el("td", {}, badge(study.status), study.error ? el("div", { class: "muted small", title: study.error },
      study.error.length > 60 ? `${study.error.slice(0, 60)}…` : study.error) : null),
    el("td", {}, progressBar(study.progress, study.status)),
    el("td", {}, study.task),
    el("td", {}, study.sampler),
    el("td", {}, bestList(study)),
    el("td", { title: study.created_at }, fmtAge(study.created_at)));
  tr.addEventListener("click", (event) => { if (!event.target.closest("a")) location.href = link; });
  if (study.id === state.created) tr.classList.add("flash");
  return tr;
}

async function refresh() {
  const query = new URLSearchParams({ offset: state.offset, limit: LIMIT });
  if (state.status) query.set("status", state.status);
  const page = await api(`/api/v1/studies?${query}`);
  const body = document.querySelector("#studies tbody");
  body.replaceChildren(...(page.items.length ? page.items.map(row)
    : [el("tr", {}, el("td", { colspan: 7, class: "placeholder" },
      state.status ? `No ${state.status} studies.` : "No studies yet. ", el("a", { href: "/new" }, "Create one")))]));
  renderPager(page);
  document.getElementById("updated").textContent = `${page.total} studies · updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.ready = "1";
  if (state.created) state.created = null; // flash once
  return page.items.some((s) => ACTIVE.has(s.status)) ? 2000 : 10000;
}

function renderPager(page) {
  const pager = document.getElementById("pager");
  if (page.total <= LIMIT) { pager.replaceChildren(); return; }
  const last = Math.max(0, Math.ceil(page.total / LIMIT) - 1);
  const current = Math.floor(state.offset / LIMIT);
  pager.replaceChildren(
    el("button", { disabled: current === 0, onclick: () => { state.offset -= LIMIT; refresh(); } }, "‹ previous"),
    el("span", { class: "muted" }, `page ${current + 1} of ${last + 1}`),
    el("button", { disabled: current >= last, onclick: () => { state.offset += LIMIT; refresh(); } }, "next ›"));
}

renderHeader("list");
if (state.created) {
  document.getElementById("notice").replaceChildren(el("div", { class: "notice", role: "status" },
    "Study ", el("a", { href: `/studies/${encodeURIComponent(state.created)}` }, state.created), " was queued."));
}
document.getElementById("status-filter").addEventListener("change", (event) => {
  state.status = event.target.value;
  state.offset = 0;
  refresh().catch(showError);
});

function showError(error) {
  document.querySelector("#studies tbody").replaceChildren(el("tr", {}, el("td", { colspan: 7 }, errorBox(error))));
}

refresh().catch(showError).finally(() => poll(refresh, 2000));
