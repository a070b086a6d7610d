"""A job's life in the worker as one ordered list of hooks (as dramatiq lists its middleware).

default.py writes the list once; hook.py has the base class and the job's state; chain.py calls a phase of
every hook in list order. Each other module is one hook. docs/reliability.md ("What happens around a job")
tells the order and what each hook promises.
"""
