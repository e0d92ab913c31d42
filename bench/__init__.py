"""Benchmarks: ``python -m bench.e2e`` runs the system end to end on traffic
shaped like a fleet, in OCPP 1.6 (``bench/fieldmix.py``) and in 2.0.1
(``bench/fieldmix201.py``), and on Heartbeats, against a bare stream consumer
(``bench/baseline_bare.py``) and a Python port of the user's Phase 1
processor (``bench/baseline_brpop.py``)."""
