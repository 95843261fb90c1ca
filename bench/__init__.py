"""Benchmarks for dlm-lsp (run from the repository root: ``python -m bench.<name>``)."""
