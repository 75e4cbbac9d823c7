"""Pure, runtime-free computation shared by the Pulsar Functions, notebooks, tests and benchmarks."""
