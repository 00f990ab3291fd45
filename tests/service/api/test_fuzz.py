"""Schemathesis over the app's own OpenAPI document: valid and invalid requests to every
operation, and not one answer of 5xx. Bounded: a fixed number of examples per operation
and mode, no shrinking, no example database."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.service.api.conftest import make_client

pytestmark = pytest.mark.slow

EXAMPLES = 50  # per operation and pass: 12 operations x (2 modes + 1 pass on a real id) x 40 > 1,000


def test_no_generated_request_gets_a_server_error(tmp_path):
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    with make_client(tmp_path) as client:  # jobs are accepted but not run: the HTTP layer is under test
        # a real study to act on, so operations on an existing id are exercised too
        seeded = client.post("/api/v1/studies", json={"name": "seed", "task": "synthetic",
                                                      "knobs": [{"kind": "bitwidth"}],
                                                      "objectives": [{"name": "fidelity"}], "n_trials": 2}).json()["id"]
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12

        for operation in operations:
            passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
            if "{study_id}" in operation.path:
                passes.append((GenerationMode.POSITIVE, {"study_id": seeded}))
            for mode, path_parameters in passes:

                @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                def exercise(case: schemathesis.Case) -> None:
                    response = case.call(session=client)
                    statuses[response.status_code] += 1
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                        f"{response.text[:200]}")

                try:
                    exercise()
                except Unsatisfiable:  # no invalid request exists for an operation without inputs
                    assert mode is GenerationMode.NEGATIVE
    total = sum(statuses.values())
    print(f"{total} requests, statuses {dict(sorted(statuses.items()))}")
    assert total >= 1000
    assert not failures, failures[:5]
    assert statuses[200] > 0 and statuses[422] > 0 and statuses[404] > 0  # it reached real code paths
