"""The onlytorch command line (installed as the module ``onlytorch_cli``)."""
