"""WHAT can be searched: knobs, the joint space, encodings, budgets, byte arithmetic and the named
trial attribute keys. The ground floor: imports nothing else of ParetoML.

The public modules are listed in ``__all__``; code outside the package imports only those."""

__all__ = ["constraints", "encoding", "introspect", "knobs", "model_bytes", "space", "trial_attrs"]
