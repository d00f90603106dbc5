"""The decoding engine: served models, continuous batching, run tasks (see :mod:`lmtune.serve`)."""
