"""imgworker's own service figures: end to end, per stage, stores, job servers, memory."""
