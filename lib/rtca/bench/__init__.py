"""Benchmarks behind `make bench`: `rtca bench NAME` runs one (`suite.BENCHES`: kernel, functions, ingest,
freshness, capacity, queries, startup), prints a table of ratios and writes JSON; `stats_kernel`, `functions_e2e`
and `pipeline` also run alone with `python -m`."""
