"""``paretoml``: run, resume and inspect studies from the command line.

Usage errors and bad specs print one line on stderr and exit with status 2, before any
storage is touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from paretoml.search_space.trial_attrs import SPEC_ATTR
from paretoml.service.ray_runtime import RayStartError

EXIT_USAGE = 2


class CliError(Exception):
    """An error the user can fix; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paretoml", description="Multi-objective search for model compression.")
    sub = parser.add_subparsers(dest="command", required=True)

    def storage_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", default=os.environ.get("PARETOML_DATABASE_URL", "sqlite:///paretoml.db"),
                       help="SQLAlchemy URL of the study database (default: sqlite:///paretoml.db)")

    def executor_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workers", type=_positive_int, default=1,
                       help="trials in flight at once (default 1); more than 1 runs them on Ray")
        p.add_argument("--executor", choices=["inprocess", "ray"],
                       help="where trials run (default: inprocess for 1 worker, ray otherwise)")
        p.add_argument("--ray-address", default=os.environ.get("PARETOML_RAY_ADDRESS"),
                       help="join this Ray cluster ('auto' or 'ray://host:10001'); default: start a local Ray")
        p.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs each Ray worker reserves (fractions allowed)")
        p.add_argument("--worker-gpus", type=_gpu_request, default="auto",
                       help="GPUs each Ray worker reserves: a fraction shares one GPU (0.25: four workers on one); "
                            "'auto' (default) shares the GPUs evenly when the study measures on cuda, none otherwise")
        p.add_argument("--threads", type=_thread_count,
                       help="threads each process computes with, this one and each Ray worker (default: the spec's "
                            "threads, else 1 here and a worker's --worker-cpus)")

    run = sub.add_parser("run", help="run a study from a YAML or JSON spec")
    run.add_argument("spec", help="path of the study spec")
    run.add_argument("--study-name", help="name of the study (default: the spec's name plus a timestamp)")
    storage_arg(run)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    executor_args(run)

    resume = sub.add_parser("resume", help="continue a study until its budget of completed trials")
    resume.add_argument("study", help="study name")
    storage_arg(resume)
    resume.add_argument("--quiet", action="store_true")
    executor_args(resume)

    front = sub.add_parser("front", help="print the Pareto front of a study")
    front.add_argument("study", help="study name")
    storage_arg(front)

    export = sub.add_parser("export", help="write a completed trial's compressed model (safetensors + manifest)")
    export.add_argument("study", help="study name")
    export.add_argument("trial", type=_non_negative_int, help="trial number")
    export.add_argument("-o", "--output", required=True, help="directory to write (created; must be empty)")
    storage_arg(export)

    studies = sub.add_parser("studies", help="list the studies of a storage")
    storage_arg(studies)

    sub.add_parser("tasks", help="list the registered tasks")

    make = sub.add_parser("make-checkpoints",
                          help="make the docs and code specialists of SmolLM2 that task smollm2-merge merges "
                               "(LoRA fine-tunes, cached; minutes on CPU)")
    make.add_argument("--seed", type=_non_negative_int, default=0)
    make.add_argument("--steps", type=_positive_int, default=12, help="optimizer steps per specialist (default 12)")
    make.add_argument("--batch", type=_positive_int, default=4, help="windows per step (default 4)")
    make.add_argument("--context", type=_positive_int, default=64, help="tokens per window (default 64)")
    make.add_argument("--lr", type=_positive_float, default=3e-3, help="adapters' Adam LR (default 3e-3)")
    make.add_argument("--rank", type=_positive_int, default=8, help="adapter rank (default 8)")

    serve = sub.add_parser("serve", help="run the REST API and the job runners (settings: PARETOML_* or .env)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; other addresses need an API token)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--storage", help="database URL (default: PARETOML_DATABASE_URL or sqlite:///paretoml.db)")
    serve.add_argument("--concurrency", type=int, help="studies run at once (0: accept jobs, run none)")
    serve.add_argument("--workers", type=_positive_int, help="Ray workers per study")
    serve.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    serve.add_argument("--threads", type=_thread_count,
                       help="threads of the server's own process, which samples for every study (default 1)")
    return parser


def _quiet_libraries() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_libraries()
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)
    try:
        if args.command == "run":
            return _run(args, console)
        if args.command == "resume":
            return _resume(args, console)
        if args.command == "front":
            return _front(args, console)
        if args.command == "export":
            return _export(args, console)
        if args.command == "studies":
            return _studies(args, console)
        if args.command == "tasks":
            return _tasks(console)
        if args.command == "serve":
            return _serve(args, console)
        if args.command == "make-checkpoints":
            return _make_checkpoints(args, console)
    except CliError as exc:
        print(f"paretoml: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RayStartError as exc:  # already cleaned up: nothing of the failed start is left running
        print(f"paretoml: error: cannot start or join Ray: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("paretoml: interrupted; completed trials are stored, continue with `paretoml resume`", file=sys.stderr)
        return 130
    return EXIT_USAGE


def _gpu_request(text: str) -> float | str:
    from paretoml.service.executors.gpu_share import parse_gpu_request

    try:
        return parse_gpu_request(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _thread_count(text: str) -> int:
    from paretoml.objectives.threads import ThreadBudgetError, check_threads

    try:
        return check_threads(int(text))
    except ValueError as exc:
        message = str(exc) if isinstance(exc, ThreadBudgetError) else f"expected a whole number, not {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _make_checkpoints(args: argparse.Namespace, console: Console) -> int:
    """Make (or find cached) the specialists of task smollm2-merge's recipe."""
    import json

    from pydantic import ValidationError

    from paretoml.objectives.tasks.base import MissingExtraError
    from paretoml.objectives.tasks.checkpoints import read_recipe, specialist_folders
    from paretoml.objectives.tasks.smollm2_merge import SmolLM2MergeOptions, SmolLM2MergeTask, recipes

    try:
        options = SmolLM2MergeOptions(seed=args.seed, specialist_steps=args.steps, specialist_batch=args.batch,
                                      specialist_context=args.context, specialist_lr=args.lr,
                                      specialist_rank=args.rank)
    except ValidationError as exc:  # pydantic's bounds (e.g. a context under 8)
        error = exc.errors()[0]
        raise CliError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    try:
        base = SmolLM2MergeTask(options).base_folder()
    except (MissingExtraError, ImportError) as exc:
        raise CliError(str(exc)) from None
    t0 = time.perf_counter()
    for folder in specialist_folders(base, recipes(options)):
        record = read_recipe(folder)
        console.print(f"{record['recipe']['domain']}: {escape(str(folder))} (loss {record['first_loss']:.3f} -> "
                      f"{record['last_loss']:.3f}, {record['train_seconds']:.0f} s to train)")
        console.print(escape(json.dumps(record["recipe"], sort_keys=True)))
    console.print(f"ready in {time.perf_counter() - t0:.0f} s")
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _open(url: str, durable: bool = False):  # type: ignore[no-untyped-def]
    from paretoml.service.storage import StorageError, open_durable_storage, open_storage

    try:
        return open_durable_storage(url) if durable else open_storage(url)
    except StorageError as exc:
        raise CliError(str(exc)) from None


def _open_existing(url: str):  # type: ignore[no-untyped-def]
    """The storage at ``url`` for a command that only reads: a SQLite file that is not there
    is an error naming it, not a new empty database."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).expanduser().is_file():
            raise CliError(f"no database at {url} (no such file); --storage names the database, "
                           "default sqlite:///paretoml.db in the working directory")
    return _open(url)


def _executor(args: argparse.Namespace, spec):  # type: ignore[no-untyped-def]
    """The executor the flags ask for; this process (the sampler's) gets its thread budget
    first, before Ray or a task starts."""
    from paretoml.objectives.threads import DEFAULT_THREADS, apply_thread_budget, resolve_threads
    from paretoml.service.executors import create_executor

    kind = args.executor or ("inprocess" if args.workers == 1 else "ray")
    if kind == "inprocess" and args.workers != 1:
        raise CliError("--executor inprocess runs one trial at a time; use --workers 1 or --executor ray")
    apply_thread_budget(resolve_threads(args.threads, spec.threads.driver, default=DEFAULT_THREADS))
    options = {"threads": args.threads}
    if kind == "ray":
        options.update(num_cpus=args.worker_cpus, num_gpus=args.worker_gpus, address=args.ray_address)
    return create_executor(kind, spec, args.workers, **options)


def _run(args: argparse.Namespace, console: Console) -> int:
    from paretoml.service.executors.gpu_share import GpuShareError
    from paretoml.service.runner import StudyExistsError, StudyRunner
    from paretoml.service.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        raise CliError(f"{args.spec}: {exc}") from None
    name = args.study_name or f"{spec.name or Path(args.spec).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = _open(args.storage, durable=True)
    with _cli_job(args.storage, name, spec, fresh=True) as job, _executor(args, spec) as executor:
        try:
            runner = StudyRunner.create(spec, storage, name, executor)
        except (SpecError, StudyExistsError, GpuShareError) as exc:
            job.error = str(exc)
            raise CliError(str(exc)) from None
        console.print(f"study [bold]{name}[/bold] in {args.storage}: {len(runner.space.param_names)} knobs over "
                      f"{len(runner.model.layers)} layers, sampler {spec.sampler.name}, {spec.n_trials} trials, "
                      f"{executor.slots} worker(s)")
        console.print(f"  knobs: {escape(runner.coverage.describe())}")
        for note in runner.space.notes:
            console.print(f"  note: {escape(note)}")
        dropped = runner.space.dropped_line(runner.model.device)
        if dropped:
            console.print(f"  deploy ({spec.deploy.to_mode().label}): {escape(dropped)}", soft_wrap=True)
        return _drive(runner, name, args, console, job)


def _resume(args: argparse.Namespace, console: Console) -> int:
    from paretoml.service.executors.gpu_share import GpuShareError
    from paretoml.service.runner import StudyNotFoundError, StudyRunner
    from paretoml.service.spec import SpecError

    storage = _open(args.storage, durable=True)
    try:
        spec = StudyRunner.load_spec(storage, args.study)
    except (SpecError, StudyNotFoundError) as exc:
        raise CliError(str(exc)) from None
    with _cli_job(args.storage, args.study, spec, fresh=False) as job, _executor(args, spec) as executor:
        try:
            runner = StudyRunner.resume(storage, args.study, executor)
        except GpuShareError as exc:
            job.error = str(exc)
            raise CliError(str(exc)) from None
        console.print(f"resuming study [bold]{args.study}[/bold] in {args.storage}")
        return _drive(runner, args.study, args, console, job)


class _CliJob:
    """This process's row in the jobs table: the API sees the study and can stop it."""

    def __init__(self, url: str, name: str, spec) -> None:  # type: ignore[no-untyped-def]
        import threading

        from paretoml.service.jobs import JobRepository, JobStatus, owner_name

        self.jobs = JobRepository(url)
        self.name = name
        self.spec = spec
        self.owner = owner_name("cli")
        self.stop_event = threading.Event()
        self.outcome = JobStatus.failed
        self.error: str | None = None


def _cli_job(url: str, name: str, spec, fresh: bool):  # type: ignore[no-untyped-def]
    from contextlib import contextmanager

    from paretoml.service.jobs import JobLease, JobStateError, JobStatus
    from paretoml.service.settings import Settings

    grace = Settings.model_fields["job_grace_s"].default

    @contextmanager
    def scope():  # type: ignore[no-untyped-def]
        job = _CliJob(url, name, spec)
        try:
            job.jobs.take_for_cli(name, spec, job.owner, grace, fresh)
        except JobStateError as exc:
            raise CliError(str(exc)) from None
        try:
            with JobLease(job.jobs, name, job.owner, job.stop_event):
                yield job
        except KeyboardInterrupt:
            job.outcome = JobStatus.stopped
            raise
        except CliError:
            raise
        except BaseException as exc:
            job.error = job.error or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if job.error is not None and job.outcome is not JobStatus.stopped:
                job.outcome = JobStatus.failed
            job.jobs.finish(name, job.outcome, job.error)

    return scope()


def _drive(runner, name: str, args: argparse.Namespace, console: Console, job: _CliJob) -> int:  # type: ignore[no-untyped-def]
    from paretoml.service.frontier import FrontierRecorder
    from paretoml.service.jobs import JobStatus
    from paretoml.service.report import front_table
    from paretoml.service.runner import TooManyFailuresError, count_complete

    runner.stop_event = job.stop_event
    runner.on_trial.append(FrontierRecorder(args.storage, runner.study, runner.spec.objective_names,
                                            runner.model.reference))
    from paretoml.service.progress import StudyProgress, wants_bar

    start = time.perf_counter()
    with StudyProgress(runner.study, runner.spec.objective_names, console,
                       enabled=not args.quiet and wants_bar(console)) as progress:
        try:
            runner.run(progress)
        except TooManyFailuresError as exc:
            job.error = str(exc)
            console.print(f"[red]stopped:[/red] {exc}")
            return 1
    elapsed = time.perf_counter() - start
    console.print(front_table(runner.study, runner.spec.objective_names, f"Pareto front of {name}"))
    done = count_complete(runner.study)
    if done < runner.spec.n_trials:
        job.outcome = JobStatus.stopped
        console.print(f"stopped on request after {done} of {runner.spec.n_trials} trials ({elapsed:.1f} s); "
                      f"continue with `paretoml resume {name}`")
        return 0
    job.outcome = JobStatus.completed
    console.print(f"{runner.spec.n_trials} trials complete; this run took {elapsed:.1f} s")
    return 0


def _front(args: argparse.Namespace, console: Console) -> int:
    import optuna

    from paretoml.service.report import front_table
    from paretoml.service.storage import study_exists

    storage = _open_existing(args.storage)
    if not study_exists(storage, args.study):
        raise CliError(f"no study named {args.study!r} in {args.storage} (`paretoml studies` lists its studies)")
    study = optuna.load_study(study_name=args.study, storage=storage)
    raw = study.user_attrs.get(SPEC_ATTR)
    # names straight from the stored spec: a study of a task given from Python (paretoml.search)
    # has a spec this process cannot validate, and its front is still worth printing
    names = [o["name"] for o in raw["objectives"]] if raw else [f"value{i}" for i in range(len(study.directions))]
    console.print(front_table(study, names, f"Pareto front of {args.study}"))
    return 0


def _export(args: argparse.Namespace, console: Console) -> int:
    from paretoml.objectives.deploy.export import weights_file_bytes
    from paretoml.service.export import (
        ExportNotFoundError,
        NeedsPythonModelError,
        TrialNotCompleteError,
        export_trial,
    )

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(f"--output {out} exists and is not an empty directory")
    storage = _open_existing(args.storage)
    try:
        manifest = export_trial(storage, args.study, args.trial, out)
    except (ExportNotFoundError, TrialNotCompleteError, NeedsPythonModelError) as exc:
        raise CliError(str(exc)) from None
    size, header = weights_file_bytes(out)
    kernels = sorted({layer.kernel for layer in manifest.layers})
    console.print(f"trial {args.trial} of {args.study} written to {out}: {size:,} bytes of weights "
                  f"({header:,} of them the safetensors header), {len(manifest.layers)} compressed layers, "
                  f"kernels on {manifest.export_device}: {', '.join(kernels) or 'none'}")
    return 0


def _studies(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from paretoml.service.study_list import list_studies

    rows = list_studies(_open_existing(args.storage))
    if not rows:
        console.print(f"no studies in {args.storage}")
        return 0
    table = Table(title=f"studies in {escape(args.storage)}")
    for column in ("study", "made by", "trials done", "objectives", "started"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(row.name), escape(row.made_by), f"{row.done}/{row.budget or '?'}",
                      escape(", ".join(row.objectives)), row.started or "")
    console.print(table)
    return 0


def _tasks(console: Console) -> int:
    from paretoml.objectives.tasks.registry import available_tasks

    for name, cls in sorted(available_tasks().items()):
        line = f"[bold]{escape(name)}[/bold]: {escape(cls.summary)}"
        if cls.extra is not None:
            extra = f"paretoml[{cls.extra}]"
            missing = cls.missing_packages()
            line += (f" [red](needs {escape(extra)}: pip install '{escape(extra)}'; missing {', '.join(missing)})[/red]"
                     if missing else f" (extra {escape(extra)}: installed)")
        console.print(line, soft_wrap=True)  # one line per task, whatever the width
    return 0


def _serve(args: argparse.Namespace, console: Console) -> int:
    import uvicorn
    from pydantic import ValidationError

    from paretoml.service.settings import LOOPBACK, Settings

    overrides = {"host": args.host, "port": args.port, "database_url": args.storage,
                 "study_concurrency": args.concurrency, "workers_per_study": args.workers,
                 "ray_address": args.ray_address, "threads": args.threads}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        from paretoml.service.spec import format_validation_error

        raise CliError(f"settings: {format_validation_error(exc)}") from None
    if settings.token is None and settings.host != LOOPBACK:
        console.print(f"no API token set (PARETOML_API_TOKEN): not binding {settings.host}, "
                      f"listening on {LOOPBACK} only")
        settings = settings.model_copy(update={"host": LOOPBACK})
    elif settings.token is None:
        console.print(f"no API token set (PARETOML_API_TOKEN): listening on {LOOPBACK} only")
    _open(settings.database_url)  # a bad URL is one line here, not a traceback from the server
    from paretoml.objectives.threads import apply_thread_budget
    from paretoml.service.api import create_app

    apply_thread_budget(settings.threads)  # the sampler's process; each study's workers get their own

    console.print(f"ParetoML API on http://{settings.host}:{settings.port} (docs at /docs), "
                  f"database {settings.database_url}, {settings.study_concurrency} study runner(s)")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
