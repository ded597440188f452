"""`make bench`: every benchmark, printing its figures, then the issue's key figures in
one table."""

from bench import (
    bench_backtest,
    bench_budget,
    bench_evaluator,
    bench_frozen_queue,
    bench_handoff,
    bench_ingest,
    bench_reads,
    bench_report,
    bench_salesforce,
    bench_slow_clients,
    bench_sweep,
    bench_worker,
    chaos,
)
from bench.figures import table

evaluator = bench_evaluator.main()
print()
handoff = bench_handoff.main([])
print()
salesforce = bench_salesforce.main([])
print()
bench_budget.main([])
print()
bench_reads.main()
print()
bench_sweep.main([])
print()
bench_report.main([])
print()
ingest = bench_ingest.main([])
print()
slow_clients = bench_slow_clients.main([])
print()
worker = bench_worker.main([])
print()
frozen = bench_frozen_queue.main(["--rounds", "1"])
print()
shaken = chaos.main([])
print()
backtest = bench_backtest.main([])
print()
print("Key figures (issue 12, 13 and 15 targets, 2-core machine)")
print(
    table(
        ingest
        + slow_clients
        + handoff
        + salesforce
        + evaluator
        + worker
        + frozen
        + shaken
        + backtest
    )
)
