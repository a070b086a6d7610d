"""What happens around a job: callbacks, completion notices, failed-job records (the worker's lifecycle hooks,
worker/lifecycle/, call them), and the Prometheus metrics they and the worker count with.
"""
