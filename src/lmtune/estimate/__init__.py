"""``lmtune estimate``: what a recipe's run will take, before it runs: tokens, steps, memory, time and money.

:func:`lmtune.estimate.run.estimate` runs the stages; this package's import stays light, so the command checks
``--hardware`` (:mod:`~lmtune.estimate.hardware`) before torch loads.
"""
