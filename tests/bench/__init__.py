"""REST throughput benchmark: ``python -m tests.bench`` (or ``nox -s bench``).

Starts real ``peersync serve`` processes (SQLite and memory engines) and, when ``etcd`` is on PATH, a
real etcd with its v2 keys API, drives GET and PUT of small values at each with an external load
generator (wrk, or a Python open-loop generator when wrk is absent), and prints requests per second,
latency percentiles, server CPU time per request and the ratio of peersync to etcd against the
targets. Numbers are reported, never asserted: see BENCHMARKS.md for recorded results.

No module here is named ``test_*``: pytest must never collect the benchmark.
"""
