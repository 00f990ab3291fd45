"""RUNNING and SERVING studies: the spec, the runner, executors, storage, the REST API and the CLI.

The public modules are listed in ``__all__``; code outside the package imports only those."""

__all__ = ["api", "cli", "db", "executors", "export", "frontier", "jobs", "mirror", "own_model",
           "ray_runtime", "report", "runner", "scheduler", "settings", "spec", "storage"]
