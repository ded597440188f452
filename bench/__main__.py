"""`make bench`: every benchmark, printing its figures."""

from bench import (
    bench_budget,
    bench_evaluator,
    bench_handoff,
    bench_ingest,
    bench_reads,
    bench_sweep,
)

bench_evaluator.main()
print()
bench_handoff.main([])
print()
bench_budget.main([])
print()
bench_reads.main()
print()
bench_sweep.main([])
print()
bench_ingest.main([])
