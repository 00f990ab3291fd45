"""WHAT a trial measures: compression, fine-tuning, deployment, measurement and the tasks.

The public modules are listed in ``__all__``; code outside the package imports only those."""

__all__ = ["compress", "deploy", "device_lock", "evaluate", "measure", "tasks", "train"]
