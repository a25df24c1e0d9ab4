"""Benchmarks against the peers: ``python -m bench [SUITE ...] [--quick]`` (see docs/benchmarks.md)."""
