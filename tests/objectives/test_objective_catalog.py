from paretoml.objectives.evaluate import KNOWN_BEFORE_EVALUATION, OBJECTIVES, SYSTEM_OBJECTIVES
from paretoml.service.spec import AT_ONCE_OBJECTIVES
from paretoml.surrogates.tpe import AT_ONCE


def test_objectives_known_before_evaluation_are_one_flag():
    assert KNOWN_BEFORE_EVALUATION == ("model_bytes", "mean_bits")
    assert AT_ONCE_OBJECTIVES == AT_ONCE == KNOWN_BEFORE_EVALUATION
    # measured objectives and every task metric need the model run
    assert not SYSTEM_OBJECTIVES["latency_ms"].known_before_evaluation
    assert not any(OBJECTIVES[name].known_before_evaluation for name in ("accuracy", "fidelity"))
