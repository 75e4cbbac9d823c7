"""Benchmarks behind `make bench`: each module runs with `python -m rtca.bench.<name>` and prints its figures."""
