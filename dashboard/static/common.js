// Shared helpers of the dashboard pages: the REST client (with the bearer token),
// DOM building, number formatting and plotting. Plain ES modules; plotly.js is the one
// library, loaded by the page from the server's own copy.

export const API = "/api/v1";
const TOKEN_KEY = "paretoml-token";

export const authRequired = document.querySelector('meta[name="paretoml-auth"]')?.content === "required";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

export function getToken() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  renderTokenButton();
}

// Fetch a JSON document. Writing requests carry the token kept in sessionStorage; a 401
// asks the user for the token and tries once more for every token they give.
export async function api(path, { method = "GET", body, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = getToken();
    if (token && method !== "GET") headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      const given = await askToken(attempt === 0 && !token ? "This server needs its API token for changes."
        : "That token was not accepted. Try again?");
      if (given) continue;
      throw new ApiError(401, "no token given: the change was not made");
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data?.detail ?? response.statusText);
    return data;
  }
}

// The JSON of a response already asked for (e.g. by a page's prefetch), with api()'s errors.
export async function responseJson(pending) {
  const response = await pending;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data?.detail ?? response.statusText);
  return data;
}

// -- the token dialog -------------------------------------------------------------------
let dialog = null;
export function askToken(message = "Enter the server's API token (PARETOML_API_TOKEN).") {
  if (!dialog) {
    dialog = el("dialog", { id: "token-dialog" },
      el("form", { method: "dialog" },
        el("strong", {}, "API token"),
        el("span", { class: "message muted" }),
        el("input", { type: "password", name: "token", autocomplete: "off", placeholder: "token" }),
        el("span", { class: "muted small" }, "Kept in this tab only (sessionStorage)."),
        el("div", { class: "actions" },
          el("button", { value: "cancel", type: "submit" }, "Cancel"),
          el("button", { value: "ok", type: "submit", class: "primary" }, "Use token"))));
    document.body.append(dialog);
  }
  dialog.querySelector(".message").textContent = message;
  const input = dialog.querySelector("input");
  input.value = getToken();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "ok" && input.value.trim()) {
        setToken(input.value.trim());
        resolve(true);
      } else resolve(false);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

// -- DOM ------------------------------------------------------------------------------------
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function renderHeader(active) {
  const top = document.getElementById("top");
  top.className = "top";
  top.replaceChildren(
    el("a", { class: "brand", href: "/" }, el("img", { src: "/ui/static/favicon.svg", alt: "" }), "ParetoML"),
    el("nav", {},
      el("a", { href: "/", class: active === "list" ? "active" : null }, "Studies"),
      el("a", { href: "/new", class: active === "new" ? "active" : null }, "New study"),
      el("a", { href: "/docs" }, "API")),
    el("span", { class: "spacer" }),
    el("button", { class: "token", id: "token-button", type: "button", onclick: () => askToken() }));
  renderTokenButton();
  watchRay();
}

// -- the Ray banner ---------------------------------------------------------------------
// Shown while the server's Ray runtime is not up (/health's "ray": "starting" or
// "down: <reason>"): studies can still be submitted, and wait in the queue.
export function rayBannerText(ray) {
  if (!ray || ray === "ok" || ray === "off") return null;
  if (ray === "starting") return "Ray is starting: queued studies run once it is up.";
  return `Ray is down (${ray.replace(/^down:\s*/, "")}). The server keeps retrying; queued studies wait and nothing is lost.`;
}

function watchRay() {
  const banner = document.getElementById("ray-banner");
  if (!banner) return;
  const check = async () => {
    const health = await api("health");
    const text = rayBannerText(health.ray);
    banner.textContent = text ?? "";
    banner.hidden = text === null;
    banner.dataset.ray = health.ray;
    return text === null ? 30000 : 3000;
  };
  check().catch((error) => console.warn("health check failed:", error)).finally(() => poll(check, 3000));
}

function renderTokenButton() {
  const button = document.getElementById("token-button");
  if (!button) return;
  button.textContent = getToken() ? "token set" : (authRequired ? "set API token" : "token");
  button.hidden = !authRequired && !getToken();
}

export function badge(text, kind = text) { return el("span", { class: `badge ${kind}` }, text); }

export function progressBar(progress, status, wide = false) {
  const pct = Math.round(100 * Math.min(1, progress.fraction));
  const extra = [progress.running && `${progress.running} running`, progress.failed && `${progress.failed} failed`,
    progress.pruned && `${progress.pruned} pruned`].filter(Boolean).join(", ");
  return el("div", { class: `progress${wide ? " wide" : ""}`, title: extra || null, role: "progressbar",
    "aria-valuenow": progress.complete, "aria-valuemax": progress.budget },
  el("div", { class: `bar ${status}`, style: { width: `${pct}%` } }),
  el("div", { class: "label" }, `${progress.complete} / ${progress.budget}`));
}

export const ACTIVE = new Set(["queued", "running", "stopping"]);

// -- numbers ----------------------------------------------------------------------------------
export function fmtBytes(value) {
  const units = ["B", "KB", "MB", "GB"];
  let v = value, i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i === 0 ? Math.round(v) : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtValue(name, value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (name.endsWith("_bytes")) return fmtBytes(value);
  if (name.endsWith("_ms")) return `${value.toPrecision(3)} ms`;
  if (name === "accuracy" || name === "fidelity") return value.toFixed(4);
  if (Number.isInteger(value)) return String(value);
  return value.toPrecision(4);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function fmtAge(iso) {
  if (!iso) return "–";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function arrow(direction) { return direction === "maximize" ? "↑" : "↓"; }

// -- plots --------------------------------------------------------------------------------------
const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

export function plot(node, figure) {
  return window.Plotly.react(node, figure.data, figure.layout, PLOT_CONFIG);
}

export function errorBox(error) {
  const text = error instanceof ApiError && Array.isArray(error.detail)
    ? error.detail.map((d) => d.msg).join("; ") : (error?.message ?? String(error));
  return el("div", { class: "error", role: "alert" }, text);
}

// Call fn now and then every `ms` milliseconds while the page is visible; fn may return a
// new interval (or null to stop).
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    let next = ms;
    if (!document.hidden) {
      try { next = (await fn()) ?? ms; } catch (error) { console.warn("poll failed:", error); }
    }
    if (next === false) return;
    timer = setTimeout(tick, next);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}

export function download(filename, data) {
  const blob = new Blob([JSON.stringify(data, null, 2) + "\n"], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
