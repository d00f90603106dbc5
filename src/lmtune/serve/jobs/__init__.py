"""The fine-tuning jobs queue: job store, supervisor, worker process (see :mod:`lmtune.serve`)."""
