"""`make bench`: every benchmark, printing its figures, then the issue's key figures in
one table."""

from bench import (
    bench_budget,
    bench_evaluator,
    bench_handoff,
    bench_ingest,
    bench_reads,
    bench_slow_clients,
    bench_sweep,
)
from bench.figures import table

evaluator = bench_evaluator.main()
print()
handoff = bench_handoff.main([])
print()
bench_budget.main([])
print()
bench_reads.main()
print()
bench_sweep.main([])
print()
ingest = bench_ingest.main([])
print()
slow_clients = bench_slow_clients.main([])
print()
print("Key figures (issue 12 targets, 2-core machine)")
print(table(ingest + slow_clients + handoff + evaluator))
