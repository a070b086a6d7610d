"""The worker process: Gearman job loop, supervisor, hybrid CPU+GPU nodes, memory budget, health and metrics.
"""
