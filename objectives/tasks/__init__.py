"""Tasks (model + data + scorer) and their registry (entry point group ``paretoml.tasks``).

The public modules are listed in ``__all__``; code outside the package imports only those."""

__all__ = ["base", "classifier", "digits", "digits_merge", "minilm", "mpnet", "python_model",
           "registry", "sentence_encoder", "synthetic"]
