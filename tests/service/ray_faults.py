"""``paretoml`` with a fault injected into Ray's start, for the tests of failed starts.

``python ray_faults.py serve ...`` runs the real CLI with the real Ray, except that the
first ``$PARETOML_TEST_RAY_FAILURES`` calls of ``ray.init`` (every one for ``always``) fail
after the local cluster's processes have been spawned. ``$PARETOML_TEST_RAY_FAULT`` picks
where:

- ``connect``: when the driver connects to its new node (``ray._private.worker.connect``),
  where a removed working directory makes the real ``ray.init`` fail; Ray holds the node,
  so ``ray.shutdown()`` can reach its processes;
- ``node``: once the node has started its processes but before ``ray.init`` holds it (as when
  the raylet does not register in time with a slow GCS): only the server's own clean-up of
  what the attempt spawned can end them.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def inject() -> None:
    setting = os.environ.get("PARETOML_TEST_RAY_FAILURES", "0")
    remaining = [sys.maxsize if setting == "always" else int(setting)]

    def due() -> bool:
        if remaining[0] <= 0:
            return False
        remaining[0] -= 1
        return True

    if os.environ.get("PARETOML_TEST_RAY_FAULT", "connect") == "node":
        from ray._private.node import Node

        real_start = Node.start_ray_processes

        def start_ray_processes(self: Node) -> None:
            real_start(self)
            if due():
                raise RuntimeError("injected fault: the node's processes started, then its start failed")

        Node.start_ray_processes = start_ray_processes  # type: ignore[method-assign]
        return

    import ray._private.worker as worker

    real_connect = worker.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        if due():
            raise FileNotFoundError(2, "injected fault: no working directory, after Ray's processes were spawned")
        return real_connect(*args, **kwargs)

    worker.connect = connect


if __name__ == "__main__":
    inject()
    from paretoml.service.cli import main

    sys.exit(main(sys.argv[1:]))
