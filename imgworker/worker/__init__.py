"""The worker process: Gearman job loop, supervisor, hybrid CPU+GPU nodes, health (the memory budget
is core/budget.py, the metrics features/metrics.py).
"""
