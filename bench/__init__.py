"""Benchmarks: ``python -m bench.e2e`` runs the system end to end against a
Python port of the user's Phase 1 processor (``bench/baseline_brpop.py``)."""
