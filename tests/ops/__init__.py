"""Op tests against PyTorch: the harness, the case tables and the tests that run them."""
