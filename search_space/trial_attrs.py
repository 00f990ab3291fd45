"""Every key ParetoML reads or writes in an Optuna study's or trial's attributes, named once.

The study is a plain Optuna study and these attributes are its record (resume, REST, the
dashboard and other Optuna tools read them), so a key spelled two ways is a silent bug.
Import the constant; never write the string out (``tests/test_trial_attrs.py`` checks).
Ground floor: service, surrogates, benchmarks and the dashboard all read these.
"""

from __future__ import annotations

__all__ = [
    "BASELINE_ATTR", "CONFIG_ATTR", "COVERAGE_ATTR", "DROPPED_CHOICES_ATTR", "ERROR_ATTR", "FIXED_PARAMS_ATTR",
    "KERNELS_ATTR", "LAYERS_ATTR", "LEGACY_CONSTRAINTS_ATTR", "METRICS_ATTR", "MODEL_BYTES_ATTR", "OPTUNA_RETRY_ATTR",
    "PROVENANCE_ATTR", "REFERENCE_ATTR", "RESULT_ATTRS", "RETRY_OF_ATTR", "RUNGS_ATTR",
    "RUNG_UNIT_ATTR", "SENSITIVITY_ATTR", "SPEC_ATTR", "STOPPED_AT_ATTR", "TEST_ACCURACY_ATTR", "TIMINGS_ATTR",
    "VALIDATION_SAMPLES_ATTR", "WORKER_ATTR", "ZO_CHAIN_ATTR", "ZO_SIGN_ATTR", "ZO_STEP_ATTR",
    "result_attr",
]

# --- study user attributes ---------------------------------------------------------------
#: The validated StudySpec (JSON), enough to resume the study.
SPEC_ATTR = "paretoml:spec"
#: The model's layer table (one row per layer knobs attach to).
LAYERS_ATTR = "paretoml:layers"
#: Study: the model's parameters and the share that no knob covers (search_space/coverage.py)
COVERAGE_ATTR = "paretoml:coverage"
#: Study: knob choices the study's device has no kernel of their own format for, not offered
#: (runtime deployment), ``{"device": ..., "dropped": {param: [choices]}}``.
DROPPED_CHOICES_ATTR = "paretoml:dropped_choices"
#: The uncompressed model measured like a trial.
REFERENCE_ATTR = "paretoml:reference"
#: The measured per-layer sensitivities, ``{"metric": name, "drop": {layer: {bits: drop}}}``
#: (studies with a warm start; transfer's layer features read them).
SENSITIVITY_ATTR = "paretoml:sensitivity"

# --- trial user attributes written by the runner -----------------------------------------
#: The trial's per-layer TrialConfig (JSON).
CONFIG_ATTR = "paretoml:config"
#: Per objective: how it was obtained (measured / estimated) and the detail.
PROVENANCE_ATTR = "paretoml:provenance"
#: Which worker (pid, node, GPUs) ran the trial.
WORKER_ATTR = "paretoml:worker"
#: Why a FAIL trial failed.
ERROR_ATTR = "paretoml:error"
#: An enqueued baseline's label ("uniform 8-bit", "sensitivity warm start").
BASELINE_ATTR = "paretoml:baseline"
#: The number of the trial an enqueued retry repeats.
RETRY_OF_ATTR = "paretoml:retry_of"
#: The rung a PRUNED trial stopped at.
STOPPED_AT_ATTR = "paretoml:stopped_at"
#: What a rung's step counts ("fine-tune step" or "validation samples").
RUNG_UNIT_ATTR = "paretoml:rung_unit"
#: Per rung step (as a string): the objectives measured there.
RUNGS_ATTR = "paretoml:rungs"

# --- trial user attributes: the evaluator's TrialResult.attrs, stored by the runner -------
#: Seconds of each step of the trial (build, fine-tune, quantize, measure, latency, suggest).
TIMINGS_ATTR = "paretoml:timings"
#: The kernel each layer of the deployed model ran.
KERNELS_ATTR = "paretoml:kernels"
#: Samples of the validation split (rungs over evaluation size).
VALIDATION_SAMPLES_ATTR = "paretoml:validation_samples"
#: All task metrics of a non-classifier task.
METRICS_ATTR = "paretoml:metrics"
#: Accuracy on the held-out test split.
TEST_ACCURACY_ATTR = "paretoml:test_accuracy"
#: Packed bytes, when model_bytes is not an objective.
MODEL_BYTES_ATTR = "paretoml:model_bytes"

#: A TrialResult.attrs key -> the trial user attribute it is stored under.
RESULT_ATTRS = {
    "timings": TIMINGS_ATTR,
    "kernels": KERNELS_ATTR,
    "validation_samples": VALIDATION_SAMPLES_ATTR,
    "metrics": METRICS_ATTR,
    "test_accuracy": TEST_ACCURACY_ATTR,
    "model_bytes": MODEL_BYTES_ATTR,
}


def result_attr(key: str) -> str:
    """The user attribute a TrialResult.attrs entry is stored under; an unnamed key is a
    bug (it could not be found by anyone reading the study), so it fails here."""
    try:
        return RESULT_ATTRS[key]
    except KeyError:
        raise KeyError(f"trial result attribute {key!r} has no name: add it to "
                       "paretoml.search_space.trial_attrs.RESULT_ATTRS") from None


# --- Optuna's own keys (its conventions, read by optuna-dashboard and best_trials) --------
#: Constraint values, <= 0 feasible, as studies stored before the runner used Optuna's
#: ``Trial.set_constraint`` kept them: a user attribute list (read only, as a fallback, by
#: service/frontier.stored_constraints; Optuna keeps its own under system attributes).
LEGACY_CONSTRAINTS_ATTR = "constraints"
#: Optuna's heartbeat retry: the id of the stale trial a WAITING trial repeats.
OPTUNA_RETRY_ATTR = "failed_trial"
#: Optuna's enqueue_trial: the parameters a WAITING trial was enqueued with.
FIXED_PARAMS_ATTR = "fixed_params"

# --- system attributes of the zeroth-order sampler -----------------------------------------
ZO_CHAIN_ATTR = "zo:chain"
ZO_STEP_ATTR = "zo:k"
ZO_SIGN_ATTR = "zo:sign"
