"""lmtune: turn a general language model into a specialist for one job, and prove it with held-out numbers."""

__version__ = "0.1.0"
