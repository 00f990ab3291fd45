"""ParetoML."""
