"""HOW the next trial is chosen: Optuna samplers and pruners, their registry, the Pareto
arithmetic and the one wrapper of Optuna's private API.

The public modules are listed in ``__all__``; code outside the package imports only those."""

__all__ = ["optuna_compat", "pareto", "pruners", "registry", "sensitivity", "tpe", "trial_history",
           "xgboost_sampler", "zeroth_order"]
