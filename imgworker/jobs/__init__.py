"""What one job does: its context and the runners for resize, info, pipeline and batch jobs.
"""
