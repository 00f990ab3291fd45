// The new-study form: a spec as YAML or JSON (examples from studies/), checked as you
// type by POST /api/v1/specs/validate (the server parses YAML: no YAML library here), then
// submitted with POST /api/v1/studies; the list page then shows it.
import { API, ApiError, api, authRequired, el, errorBox, getToken, renderHeader, setToken } from "./common.js";

const $ = (id) => document.getElementById(id);
const text = $("spec");
const format = $("format");
const box = $("validation");
let examples = [];
let timer = null;
let sequence = 0;
let lastValid = null; // {text, spec}

function detectFormat(value) {
  if (format.value !== "auto") return format.value;
  return /^\s*[{[]/.test(value) ? "json" : "yaml";
}

function where(loc) {
  // ["body", "spec", "objectives", 0, "name"] -> "objectives[0].name"; parse errors point at the text
  const path = loc.slice(loc[0] === "body" ? 1 : 0);
  if (path[0] === "spec") path.shift();
  if (path.length === 1 && path[0] === "text") return "spec text";
  return path.reduce((out, part) => (typeof part === "number" ? `${out}[${part}]` : out ? `${out}.${part}` : String(part)), "")
    || "spec";
}

function showErrors(detail) {
  text.classList.remove("valid");
  text.classList.add("invalid");
  text.setAttribute("aria-invalid", "true");
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  box.replaceChildren(el("ul", { class: "errors", id: "spec-errors", role: "alert" },
    items.map((e) => el("li", {}, el("code", {}, where(e.loc ?? [])), ": ", String(e.msg).replace(/^Value error, /, "")))));
}

function showValid(spec) {
  text.classList.remove("invalid");
  text.classList.add("valid");
  text.removeAttribute("aria-invalid");
  const objectives = spec.objectives.map((o) => o.name).join(", ");
  box.replaceChildren(el("div", { class: "valid-note", id: "spec-valid" },
    `✓ valid: task ${spec.task}, ${spec.knobs.length} knob(s), objectives ${objectives}, sampler ${spec.sampler.name}, `
    + `${spec.n_trials} trials`));
}

// Validate the text; resolves to the validated spec, or null (errors shown).
async function validate() {
  const value = text.value;
  if (!value.trim()) { box.replaceChildren(); text.classList.remove("valid", "invalid"); return null; }
  if (lastValid && lastValid.text === value) return lastValid.spec;
  const mine = ++sequence;
  try {
    const spec = await api(`${API}/specs/validate`, { method: "POST", body: { text: value, format: detectFormat(value) } });
    if (mine === sequence) { showValid(spec); lastValid = { text: value, spec }; }
    return spec;
  } catch (error) {
    if (mine !== sequence) return null;
    if (error instanceof ApiError && error.status === 422) showErrors(error.detail);
    else box.replaceChildren(errorBox(error));
    return null;
  }
}

function schedule() {
  clearTimeout(timer);
  lastValid = null;
  timer = setTimeout(validate, 500);
}

async function submit(event) {
  event.preventDefault();
  clearTimeout(timer);
  const button = $("submit");
  button.disabled = true;
  try {
    const spec = await validate();
    if (!spec) return;
    const created = await api(`${API}/studies`, { method: "POST", body: spec });
    location.href = `/?created=${encodeURIComponent(created.id)}`;
  } catch (error) {
    if (error instanceof ApiError && error.status === 422) showErrors(error.detail);
    else box.replaceChildren(errorBox(error));
  } finally {
    button.disabled = false;
  }
}

async function loadExamples() {
  try {
    examples = await api("/ui/api/examples");
  } catch {
    examples = [];
  }
  const select = $("example");
  select.append(...examples.map((e, i) => el("option", { value: String(i) }, e.name)));
  if (!examples.length) select.firstElementChild.textContent = "(no examples installed)";
  select.addEventListener("change", () => {
    const example = examples[Number(select.value)];
    if (select.value === "" || !example) return;
    text.value = example.text;
    format.value = "auto";
    schedule();
  });
  if (!text.value && examples.length) {
    text.value = examples[0].text;
    select.value = "0";
    validate();
  }
}

renderHeader("new");
if (authRequired) {
  const field = $("token-field");
  field.hidden = false;
  const input = $("token");
  input.value = getToken();
  input.addEventListener("change", () => setToken(input.value.trim()));
}
text.addEventListener("input", () => {
  const select = $("example");
  if (select.value !== "" && examples[Number(select.value)]?.text !== text.value) select.value = "";
  schedule();
});
format.addEventListener("change", () => { lastValid = null; validate(); });
$("validate").addEventListener("click", () => { lastValid = null; validate(); });
$("spec-form").addEventListener("submit", submit);
loadExamples().finally(() => { document.body.dataset.ready = "1"; });
