"""Scale-out: a Ray cluster of three nodes on this machine, results in PostgreSQL."""

from __future__ import annotations

import optuna
import pytest
import ray
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from paretoml.search_space.trial_attrs import WORKER_ATTR
from paretoml.service.executors.ray_pool import RayPoolExecutor
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import parse_spec
from paretoml.service.storage import open_durable_storage

pytestmark = pytest.mark.slow


@pytest.fixture
def three_node_cluster():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_the_nodes_workers(three_node_cluster, postgres_server):
    url = postgres_server.create_database()
    spec = parse_spec({
        "task": "synthetic",
        "task_options": {"busy_ms": 30},
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": 30,
    })
    # one CPU per worker and one per node: the pool must use every node
    executor = RayPoolExecutor(spec, workers=3, num_cpus=1, address=three_node_cluster.address)
    with executor:
        runner = StudyRunner.create(spec, open_durable_storage(url), "cluster", executor)
        runner.run()
        node_ids = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    study = optuna.load_study(study_name="cluster", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 30 == len(study.trials)
    used = {t.user_attrs[WORKER_ATTR]["node"] for t in complete}
    assert len(node_ids) == 3 and used == node_ids
