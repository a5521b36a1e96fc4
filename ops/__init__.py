"""The operator's command line, ``rainbridge``: above both the receiver and the worker."""
