"""`drover chaos`: run a workload on a local cluster, inject faults on a seeded schedule, check invariants.

netns.py (real network partitions when run as root), workload.py (the built-in framework, which records
its history Jepsen-style), faults.py (the scenarios and their injectors), checks.py (the invariants),
report.py (JSON and a table), run.py (the orchestration). docs/chaos.md is the user's guide.
"""
