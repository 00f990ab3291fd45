"""StudySpec: what a user submits, as YAML or JSON, validated before anything is stored.

Validation is strict, as the JSON Schema that the API publishes says: ``true`` is no
integer and ``"3"`` no number (pydantic's lax mode would take both)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from paretoml.objectives.evaluate import KNOWN_BEFORE_EVALUATION, OBJECTIVES, Direction, objective_catalog
from paretoml.objectives.tasks.registry import UnknownTaskError, task_class
from paretoml.objectives.threads import DEFAULT_THREADS, MAX_THREADS
from paretoml.search_space.constraints import Constraint
from paretoml.search_space.deploy_mode import RUNTIME, DeployMode, DeployModeName
from paretoml.search_space.knobs import SUPPORTED_BITS, BitwidthKnob, Knob
from paretoml.surrogates.pruners import PrunerOptionsError, validate_pruner
from paretoml.surrogates.registry import SamplerOptionsError, validate_sampler


class SpecError(ValueError):
    """A spec that cannot be used; the message is one line and names the field."""


class _SpecLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's floats: ``1e-3`` is a number (PyYAML's 1.1 rules make it a string)."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse a spec's YAML text."""
    return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 (a SafeLoader)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ObjectiveSpec(_Strict):
    """An objective by name: one of the task's own metrics or a system objective (checked
    against the task by :class:`StudySpec`, which also fills in its natural direction)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.@-]{0,63}$")
    direction: Direction | None = Field(None, description="defaults to the objective's natural direction")

    @property
    def resolved_direction(self) -> Direction:
        return self.direction or OBJECTIVES[self.name].direction


#: Validation context key: tasks given in this process (the Python API), by name, beside
#: the registered ones. A client of the REST API never sets it.
LOCAL_TASKS = "paretoml.local_tasks"


def _task(name: str, info: ValidationInfo) -> Any:
    local = (info.context or {}).get(LOCAL_TASKS, {})
    return local[name] if name in local else task_class(name)


class SamplerSpec(_Strict):
    name: str = "tpe"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> SamplerSpec:
        try:
            validate_sampler(self.name, self.options)
        except SamplerOptionsError as exc:
            raise ValueError(str(exc)) from None
        return self


class PrunerSpec(_Strict):
    """Stop bad trials early: each trial reports its objectives at rungs of one fidelity and
    the pruner may stop it there (surrogates/pruners.py).

    ``over: finetune``: the rungs are fractions of ``finetune.steps`` (step = fine-tune step).
    ``over: evaluation``: the rungs are fractions of the validation split, scored on its first
    samples after the full fine-tune (step = validation samples scored); tasks without
    fine-tuning prune this way. A study prunes over one fidelity only: with
    ``over: evaluation`` a trial's fine-tune (if any) always runs to the end."""

    name: str = "none"
    options: dict[str, Any] = Field(default_factory=dict)
    over: Literal["finetune", "evaluation"] = Field(
        "finetune", description="the fidelity the rungs cut: fine-tune steps or validation samples")
    rungs: list[float] = Field(
        default_factory=lambda: [0.25, 0.5],
        description="fractions, in (0, 1), of finetune.steps or of the validation split at which a trial "
                    "reports and may be stopped, in increasing order; the full trial is the last rung",
        # what _valid_rungs checks, as far as JSON Schema can say it (not the order)
        json_schema_extra={"minItems": 1, "uniqueItems": True,
                           "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
    )

    @field_validator("rungs")
    @classmethod
    def _valid_rungs(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < f < 1 for f in value) or sorted(set(value)) != value:
            raise ValueError("rungs must be a non-empty increasing list of fractions in (0, 1)")
        return value

    @model_validator(mode="after")
    def _known(self) -> PrunerSpec:
        try:
            validate_pruner(self.name, self.options)
        except PrunerOptionsError as exc:
            raise ValueError(str(exc)) from None
        return self

    def steps(self, finetune_steps: int) -> list[int]:
        """The fine-tune steps of the rungs (distinct, below the full run); none unless the
        rungs are over fine-tuning."""
        if self.name == "none" or self.over != "finetune":
            return []
        return sorted({s for f in self.rungs if 0 < (s := int(round(f * finetune_steps))) < finetune_steps})


#: Objectives known from the config alone, so measurable at every rung.
AT_ONCE_OBJECTIVES = KNOWN_BEFORE_EVALUATION
#: System objectives that only the full trial measures.
FULL_TRIAL_OBJECTIVES = ("latency_ms", "peak_memory_bytes")


class MeasureSpec(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    latency_warmup: int = Field(10, ge=0, le=1000)
    latency_repeats: int = Field(50, ge=1, le=10000)
    latency_threads: int = Field(1, ge=1, le=256)


class DeploySpec(_Strict):
    """How trials are deployed (search_space/deploy_mode.py): which bytes ``model_bytes``
    counts and which model latency and memory are measured on."""

    mode: DeployModeName = Field(RUNTIME, description=(
        "runtime: every layer in a kernel of its own format, model_bytes the resident bytes; "
        "dequantize-at-load: packed file, expanded to float at load, model_bytes the file's weight bytes"))
    emulate: bool = Field(False, description=(
        "runtime only: keep formats with no kernel on the device (run in the narrowest kernel "
        "holding their values; latency estimated)"))

    @model_validator(mode="after")
    def _emulate_is_runtime_only(self) -> DeploySpec:
        if self.emulate and self.mode != RUNTIME:
            _raise_at("emulate", f"applies to mode runtime only, not {self.mode}")
        return self

    def to_mode(self) -> DeployMode:
        return DeployMode(self.mode, self.emulate)


class FinetuneSpec(_Strict):
    steps: int = Field(0, ge=0, le=100000, description="0 disables fine-tuning")
    batch_size: int = Field(32, ge=1, description="used when no batch_size knob is searched")
    learning_rate: float = Field(1e-3, gt=0, description="used when no learning_rate knob is searched")


class ThreadsSpec(_Strict):
    """Threads each process of the study computes with (torch, OpenMP/BLAS, XGBoost); see
    objectives/threads.py. The CLI's ``--threads`` overrides both."""

    driver: int | None = Field(None, ge=1, le=MAX_THREADS, description=(
        f"the process that samples, and runs the trials when they run in process (CLI, Python API); "
        f"default {DEFAULT_THREADS}"))
    worker: int | None = Field(None, ge=1, le=MAX_THREADS, description=(
        "each Ray worker; default its share of CPUs (num_cpus rounded down, at least 1)"))


class WarmStartSpec(_Strict):
    """First trials from per-layer sensitivity: the best (bits, unstructured pruning ratio)
    per layer by the additive sensitivity model, at several byte budgets."""

    method: Literal["sensitivity"] = "sensitivity"
    fractions: list[float] = Field(
        # up to the 8-bit bytes: the front's high-fidelity end (where a transformer keeps
        # >= 99% fidelity) is seeded too, not only its small-model end
        default_factory=lambda: [0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0],
        description="budgets as fractions of the bit-knobbed layers' bytes at uniform 8 bits as the study "
                    "deploys them (a layer with no 8-bit kernel: the choice that trial runs it in); "
                    "those below what the offered choices can reach are skipped",
    )

    @field_validator("fractions")
    @classmethod
    def _valid_fractions(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < f <= 4 for f in value):
            raise ValueError("fractions must be a non-empty list of numbers in (0, 4]")
        return value


class StudySpec(_Strict):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    task: str
    task_options: dict[str, Any] = Field(default_factory=dict)
    knobs: list[Knob] = Field(min_length=1)
    objectives: list[ObjectiveSpec] = Field(min_length=1, max_length=4)
    constraints: list[Constraint] = Field(default_factory=list)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    n_trials: int = Field(ge=1, le=100000)
    seed: int = Field(0, ge=0)
    baselines: list[int] = Field(
        default_factory=list, description="uniform bitwidths enqueued as the first trials (no pruning)"
    )
    warm_start: WarmStartSpec | None = Field(
        None, description="seed the study with sensitivity-based allocations (needs a bitwidth knob)"
    )
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    threads: ThreadsSpec = Field(default_factory=ThreadsSpec)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str, info: ValidationInfo) -> str:
        try:
            _task(value, info)
        except UnknownTaskError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("task_options")
    @classmethod
    def _valid_task_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        task = info.data.get("task")
        if task is None:  # the task itself failed; that error is enough
            return value
        try:
            _task(task, info).Options.model_validate(value)
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc)) from None
        return value

    @field_validator("objectives")
    @classmethod
    def _distinct_and_defined(cls, value: list[ObjectiveSpec], info: ValidationInfo) -> list[ObjectiveSpec]:
        names = [o.name for o in value]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a name: {names}")
        task = info.data.get("task")
        if task is None:
            return value
        catalog = objective_catalog(_task(task, info).metrics)
        for i, o in enumerate(value):
            if o.name not in catalog:
                message = (f"unknown objective {o.name!r}: task {task!r} does not define it; "
                           f"available: {', '.join(catalog)}")
                # raised with the objective's own location (objectives.<i>.name)
                raise ValidationError.from_exception_data("StudySpec", [InitErrorDetails(
                    type=PydanticCustomError("value_error", "{message}", {"message": message}),
                    loc=(i, "name"), input=o.name)])
        # the natural direction is stored with the spec, so readers need not know the task
        return [o if o.direction else ObjectiveSpec(name=o.name, direction=catalog[o.name].direction)
                for o in value]

    @field_validator("baselines")
    @classmethod
    def _valid_baselines(cls, value: list[int]) -> list[int]:
        bad = sorted(set(value) - SUPPORTED_BITS)
        if bad:
            raise ValueError(f"baseline bits {bad} not supported; choose from {sorted(SUPPORTED_BITS)}")
        return value

    @model_validator(mode="after")
    def _baselines_fit(self) -> StudySpec:
        if len(self.baselines) > self.n_trials:
            raise ValueError("more baselines than n_trials")
        return self

    @model_validator(mode="after")
    def _seeds_fit_the_space(self) -> StudySpec:
        """Baselines and the warm start set bitwidth parameters, so their bits must be among
        every bitwidth knob's choices (a value outside a choice list fails every such trial)."""
        bit_knobs = [(i, k) for i, k in enumerate(self.knobs) if isinstance(k, BitwidthKnob)]
        if self.baselines and not bit_knobs:
            _raise_at("baselines", "uniform-bitwidth baselines need a bitwidth knob")
        for i, knob in bit_knobs:
            outside = [b for b in dict.fromkeys(self.baselines) if b not in knob.choices]
            if outside:
                _raise_at("baselines", f"baseline bits {outside} are not among the choices {knob.choices} "
                                       f"of the bitwidth knob knobs.{i}")
        if self.warm_start is not None:
            if not bit_knobs:
                _raise_at("warm_start", "the sensitivity warm start allocates bits per layer: it needs a bitwidth knob")
            first = bit_knobs[0][1].choices
            for i, knob in bit_knobs[1:]:
                if set(first) - set(knob.choices):
                    _raise_at("warm_start", f"the warm start allocates bits from the first bitwidth knob's choices "
                                            f"{first}, and the bitwidth knob knobs.{i} lacks "
                                            f"{sorted(set(first) - set(knob.choices))}; give its knobs the same choices")
        return self

    @model_validator(mode="after")
    def _pruner_fits(self) -> StudySpec:
        if self.pruner.name == "none":
            return self
        try:
            validate_pruner(self.pruner.name, self.pruner.options, len(self.objectives))
        except PrunerOptionsError as exc:
            _raise_at("pruner", str(exc))
        if self.pruner.over == "finetune" and not self.pruner.steps(self.finetune.steps):
            _raise_at("pruner", "the rungs are points of fine-tuning; set finetune.steps so that "
                                f"the rungs {self.pruner.rungs} fall on distinct steps below it, "
                                "or prune over evaluation size (pruner.over: evaluation)")
        if not [n for n in self.objective_names if n not in AT_ONCE_OBJECTIVES + FULL_TRIAL_OBJECTIVES]:
            _raise_at("pruner", "no objective is measurable at a rung; add one of the task's metrics "
                                "(e.g. accuracy or fidelity)")
        return self

    @property
    def directions(self) -> list[Direction]:
        return [o.resolved_direction for o in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        return [o.name for o in self.objectives]


def _raise_at(field: str, message: str) -> None:
    """A model-level check's error, located at ``field`` (so the API's 422 names it)."""
    raise ValidationError.from_exception_data("StudySpec", [InitErrorDetails(
        type=PydanticCustomError("value_error", "{message}", {"message": message}), loc=(field,), input=None)])


def format_validation_error(error: ValidationError) -> str:
    """One line per spec: ``field.path: message; other.field: message``."""
    parts = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        parts.append(f"{loc or '(spec)'}: {msg}")
    return "; ".join(parts)


def parse_spec(data: Any, local_tasks: dict[str, Any] | None = None) -> StudySpec:
    """Validate a parsed document; raises :class:`SpecError` with a one-line message.

    ``local_tasks`` (name -> task) are tasks given in this process by the Python API."""
    if not isinstance(data, dict):
        raise SpecError("(spec): the spec must be a mapping of fields")
    try:
        return StudySpec.model_validate(data, context={LOCAL_TASKS: local_tasks or {}})
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None


def load_spec(path: str | Path) -> StudySpec:
    """Read a spec from a YAML or JSON file (by extension; YAML otherwise)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path.name} is not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start} (save the spec as UTF-8)") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"{path.name} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {first}") from None
    return parse_spec(data)
