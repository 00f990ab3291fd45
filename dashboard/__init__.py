"""ParetoML dashboard: figures (``figures.py``) and the pages served by the API app (``routes.py``)."""
