"""ParetoML dashboard: figures (``figures.py``) and the pages installed into the API app
(``routes.py``, entry point ``paretoml.ui``), reading through ``StudyReads``.

The public modules are listed in ``__all__``; code outside the package imports only those."""

__all__ = ["figures", "routes"]
