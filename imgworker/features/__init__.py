"""What happens around a job: callbacks, completion notices, failed-job records, the end-of-job hooks, and the
Prometheus metrics they and the worker count with.
"""
