"""Apply a TrialConfig to a copy of a model: quantize, prune, merge.

The public modules are listed in ``__all__``; code outside the package imports only those."""

__all__ = ["merge", "prune", "quantize"]
