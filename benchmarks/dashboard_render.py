"""How long the dashboard's study page takes to render a study of many trials.

A real ``paretoml serve`` (no study runners: it only reads) serves a SQLite database that
holds one study of ``--trials`` trials, made by a real run of the ``synthetic`` task
through ``paretoml run`` (random sampler, three objectives, a byte budget that leaves some
trials infeasible), or an existing database given with ``--db``. Headless Chromium
(Debian's, through Playwright) opens the study page and the script reads two marks the
page sets itself:

- ready: the Pareto front, the history and the trials table are drawn;
- interactive: the frame with them is painted and the main thread is free again (a
  timer posted after the next animation frame has run), so a click is handled at once.

Both are measured from the navigation's start, in these situations:

- cold server: the first page load after the server starts (Optuna's cached storage has
  not read the trials yet) in a new browser context (no HTTP cache);
- warm server, new browser context: plotly.js (4.8 MB) is fetched and compiled again,
  as on a first visit;
- warm server, reload in the same context: plotly.js comes from the browser's cache, as
  on any later visit;
- then, on a loaded page: the importances request (first computation and cached), a
  click on a Pareto point until that trial's per-layer chart is drawn, and a click on a
  column header until the 10,000-row table is sorted and drawn, and a third axis chosen
  until the 3-D scatter of every point is drawn.

A breakdown gives the latency of each request of the page and when plotly.js had run
(DOMContentLoaded).

Usage: python benchmarks/dashboard_render.py [--trials 10000] [--repeats 5] [--db PATH --study NAME]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _machine import machine

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
PARETOML = str(Path(sys.executable).with_name("paretoml"))

SPEC = """\
name: {name}
task: synthetic
task_options: {{width: 64}}
knobs:
  - kind: bitwidth
    choices: [2, 3, 4, 6, 8, 16]
  - kind: prune
    method: structured
    low: 0.0
    high: 0.75
    step: 0.125
objectives:
  - name: fidelity
  - name: model_bytes
  - name: latency_ms
constraints:
  - kind: model_bytes
    max_bytes: 1500
measure: {{latency_warmup: 1, latency_repeats: 3}}
sampler: {{name: random}}
baselines: [8, 4]
n_trials: {trials}
seed: 0
"""


def make_study(folder: Path, trials: int) -> tuple[Path, str]:
    """Run the synthetic task for real through the CLI into a new SQLite file."""
    name = f"synthetic-{trials}"
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(name=name, trials=trials))
    db = folder / "study.db"
    start = time.perf_counter()
    subprocess.run([PARETOML, "run", str(spec), "--storage", f"sqlite:///{db}", "--study-name", name, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PARETOML_CACHE_DIR": str(folder / "cache")})
    print(f"made {name}: {trials} trials by `paretoml run` in {time.perf_counter() - start:.0f} s", flush=True)
    return db, name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, db: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PARETOML_DATABASE_URL": f"sqlite:///{db}", "PARETOML_PORT": str(self.port),
               "PARETOML_HOST": "127.0.0.1", "PARETOML_STUDY_CONCURRENCY": "0"}
        env.pop("PARETOML_API_TOKEN", None)
        self.log = log.open("a")
        self.process = subprocess.Popen([PARETOML, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"paretoml serve exited; see {log}") from None
                time.sleep(0.2)
        raise RuntimeError("paretoml serve did not answer in 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


MARKS = """() => {
  const t = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
  return {ready: t('paretoml-ready'), interactive: t('paretoml-interactive'),
          points: window.paretoml?.state.firstPage?.total ?? 0};
}"""


IMPORTANCES = """() => new Promise((resolve) => {
  const check = () => {
    if (document.getElementById('importances').dataset.ready !== '1') { setTimeout(check, 10); return; }
    const e = performance.getEntriesByType('resource').find((r) => r.name.includes('/figures/importances'));
    resolve(e.responseEnd - e.startTime);
  };
  check();
})"""

# requests of the page whose latency (request start to response end) the table breaks down
REQUESTS = {
    "plotly.js (4.8 MB; from the HTTP cache on reload)": "/ui/plotly-",
    "GET /api/v1/studies/{id}": "/api/v1/studies/{study}?",
    "GET /ui/api/studies/{id}/figures (Pareto + history)": "/figures?include=pareto",
    "GET /api/v1/studies/{id}/frontier": "/frontier",
    "GET /api/v1/studies/{id}/trials?brief=true&limit=25 (first table page)": "limit=25",
}

TIMINGS = """(patterns) => {
  const out = {};
  const entries = performance.getEntriesByType('resource');
  for (const [label, pattern] of Object.entries(patterns)) {
    const e = entries.find((r) => (r.name + '?').includes(pattern));
    out[label] = e ? e.responseEnd - e.startTime : null;
  }
  const nav = performance.getEntriesByType('navigation')[0];
  out['DOMContentLoaded (plotly.js compiled and run)'] = nav.domContentLoadedEventEnd;
  return out;
}"""


def load(page, url: str, breakdown: dict[str, list[float]] | None = None) -> dict[str, float]:
    page.goto(url)
    page.wait_for_selector("body[data-interactive='1']", timeout=120_000)
    if breakdown is not None:
        study = url.rsplit("/", 1)[-1]
        patterns = {k: v.replace("{study}", study) for k, v in REQUESTS.items()}
        for label, value in page.evaluate(TIMINGS, patterns).items():
            if value is not None:
                breakdown.setdefault(label, []).append(value)
    return page.evaluate(MARKS)


def click_pareto_point(page) -> float:
    """Click the first Pareto point on screen; return ms until its trial panel is drawn."""
    where = page.evaluate("""() => {
      const gd = document.getElementById('pareto');
      const trace = gd._fullData.find((t) => t.meta && t.meta.role === 'pareto');  // decoded arrays
      const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
      return {x: box.left + xa._offset + xa.l2p(trace.x[0]), y: box.top + ya._offset + ya.l2p(trace.y[0])};
    }""")
    page.mouse.move(where["x"], where["y"])
    page.wait_for_timeout(150)  # plotly picks the hovered point on mouse move
    page.evaluate("document.getElementById('trial').dataset.trial = ''")
    start = page.evaluate("performance.now()")
    page.mouse.click(where["x"], where["y"])
    page.wait_for_selector("#trial[data-trial]:not([data-trial=''])[data-ready='1']", timeout=30_000)
    return page.evaluate("performance.now()") - start


def sort_table(page) -> float:
    return page.evaluate("""() => new Promise((resolve) => {
      const th = document.querySelector('#trials th[data-key^="v:"]');
      const start = performance.now();
      th.click();
      requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - start), 0));
    })""")


def three_d(page) -> float:
    """Choose a third axis: ms until the 3-D scatter of every point is drawn and painted."""
    return page.evaluate("""() => new Promise((resolve) => {
      const node = document.getElementById('pareto'), z = document.getElementById('axis-z');
      const start = performance.now();
      node.once('plotly_afterplot', () => requestAnimationFrame(() => setTimeout(
        () => resolve(performance.now() - start), 0)));
      z.value = [...z.options].map((o) => o.value).find((v) => v && !node.dataset.axes.split(',').includes(v));
      z.dispatchEvent(new Event('change'));
    })""")


def summarize(label: str, values: list[float]) -> str:
    if not values:
        return f"| {label} | – | – | – | 0 |"
    return (f"| {label} | {statistics.median(values):,.0f} | {min(values):,.0f} | {max(values):,.0f} | "
            f"{len(values)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000, help="trials of the study to make (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="page loads per situation (default 5)")
    parser.add_argument("--cold-repeats", type=int, default=2,
                        help="server starts for cold loads, besides the one of the warm loads (default 2)")
    parser.add_argument("--db", type=Path, help="use this SQLite file instead of making a study")
    parser.add_argument("--study", help="the study's name in --db")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing (apt install chromium)")
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="paretoml-render-") as tmp:
        folder = Path(tmp)
        if args.db:
            if not args.study:
                sys.exit("--db needs --study")
            db = folder / "study.db"  # a copy: the server migrates and writes its own rows
            _copy_sqlite(args.db, db)
            name = args.study
        else:
            db, name = make_study(folder, args.trials)
        log = folder / "serve.log"
        results: dict[str, list[float]] = {k: [] for k in (
            "cold_ready", "cold_interactive", "new_ctx_ready", "new_ctx_interactive", "reload_ready",
            "reload_interactive", "click", "sort", "importances_first", "importances", "three_d")}
        points = 0
        breakdown_new: dict[str, list[float]] = {}
        breakdown_reload: dict[str, list[float]] = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            viewport = {"width": 1400, "height": 1000}
            for _ in range(args.cold_repeats):
                server = Server(db, log)
                try:
                    context = browser.new_context(viewport=viewport)
                    marks = load(context.new_page(), f"{server.url}/studies/{name}")
                    results["cold_ready"].append(marks["ready"])
                    results["cold_interactive"].append(marks["interactive"])
                    context.close()
                finally:
                    server.stop()
            server = Server(db, log)
            try:
                context = browser.new_context(viewport=viewport)
                page = context.new_page()
                marks = load(page, f"{server.url}/studies/{name}")  # a cold load too: it warms the server
                results["cold_ready"].append(marks["ready"])
                results["cold_interactive"].append(marks["interactive"])
                results["importances_first"].append(page.evaluate(IMPORTANCES))
                context.close()
                for _ in range(args.repeats):
                    context = browser.new_context(viewport=viewport)
                    page = context.new_page()
                    marks = load(page, f"{server.url}/studies/{name}", breakdown_new)
                    points = marks["points"]
                    results["new_ctx_ready"].append(marks["ready"])
                    results["new_ctx_interactive"].append(marks["interactive"])
                    for _ in range(2):
                        marks = load(page, f"{server.url}/studies/{name}", breakdown_reload)
                        results["reload_ready"].append(marks["ready"])
                        results["reload_interactive"].append(marks["interactive"])
                    results["importances"].append(page.evaluate(IMPORTANCES))
                    page.evaluate("document.getElementById('axis-z').value = ''; "
                                  "document.getElementById('axis-z').dispatchEvent(new Event('change'))")
                    page.wait_for_function("document.getElementById('pareto').dataset.axes.split(',').length === 2")
                    results["click"].append(click_pareto_point(page))
                    results["sort"].append(sort_table(page))
                    results["three_d"].append(three_d(page))
                    context.close()
            finally:
                server.stop()
            version = browser.version
            browser.close()

    print(f"# benchmarks/dashboard_render.py: the study page of a {points:,}-trial study\n")
    print(f"machine: {machine()}, Chromium {version} (headless, WebGL by SwiftShader)")
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
          "(other processes share the cores)\n")
    print("| page load, ms from navigation start (median, min, max over loads) | median | min | max | loads |")
    print("|---|---:|---:|---:|---:|")
    print(summarize("cold server (first read of the trials), new browser context: ready", results["cold_ready"]))
    print(summarize("cold server, new browser context: interactive", results["cold_interactive"]))
    print(summarize("warm server, new browser context (plotly.js fetched): ready", results["new_ctx_ready"]))
    print(summarize("warm server, new browser context: interactive", results["new_ctx_interactive"]))
    print(summarize("warm server, reload (plotly.js cached): ready", results["reload_ready"]))
    print(summarize("warm server, reload: interactive", results["reload_interactive"]))
    print(summarize("GET .../figures/importances, first computation (PED-ANOVA, 3 objectives + front)",
                    results["importances_first"]))
    print(summarize("GET .../figures/importances, cached (same study, same trials)", results["importances"]))
    print(summarize("click on a Pareto point -> its per-layer chart drawn", results["click"]))
    print(summarize(f"choose a z axis -> 3-D scatter of all {points:,} points drawn", results["three_d"]))
    print(summarize(f"click on a column header -> {points:,}-row table sorted and drawn", results["sort"]))
    for title, breakdown in (("warm server, new browser context", breakdown_new), ("warm server, reload", breakdown_reload)):
        print(f"\n| {title}: request latency, ms (request start to response end) | median | min | max | loads |")
        print("|---|---:|---:|---:|---:|")
        for label, values in breakdown.items():
            print(summarize(label, values))
    print()
    for label, key in (("first visit (new browser context)", "new_ctx_interactive"),
                       ("later visit (reload, plotly.js cached)", "reload_interactive")):
        values = results[key]
        median = statistics.median(values) if values else float("nan")
        print(f"goal, interactive in < 2,000 ms, warm server, {label}: median {median:,.0f} ms -> "
              f"{'met' if median < 2000 else 'NOT met'}")


def _copy_sqlite(source: Path, target: Path) -> None:
    import sqlite3

    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


if __name__ == "__main__":
    main()
