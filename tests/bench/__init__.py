"""REST throughput benchmark: ``python -m tests.bench`` (or ``nox -s bench``).

Starts real ``peersync serve`` processes (SQLite and memory engines) and, when ``etcd`` is on PATH, a
real etcd with its v2 keys API, drives GET and PUT of small values at each with an external load
generator (wrk, or a Python open-loop generator when wrk is absent), and prints requests per second,
latency percentiles, server CPU time per request and the ratio of peersync to etcd against the
targets. With ``--targets forwarding,membership,replication,handoff,failover`` it also runs real
clusters over a private Redis: the same GET and PUT sent to a namespace's owner and through a node
that forwards them (``_forwarding``), how long members take to see a node join and a killed node die
(``_membership``), PUT with replication on and off (``_replication``), how long a node joining a
loaded cluster takes to take over its share (``_handoff``), and how long a killed owner's
namespaces take to accept writes again (``_failover``). Numbers are reported, never asserted: see
BENCHMARKS.md for recorded results.

No module here is named ``test_*``: pytest must never collect the benchmark.
"""
