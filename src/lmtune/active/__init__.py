"""``lmtune active``: which unlabelled records to label next, and (``--oracle``) whether that beats random.

- :mod:`~lmtune.active.pool` reads the pool in the recipe's data format (labels ignored, or with ``--oracle``
  hidden until a round selects them);
- :mod:`~lmtune.active.scoring` answers pool records as evaluation answers test examples (a run's fine-tuned
  model, or the base model zero-shot; few-shot for the committee), with the run's fitted temperature;
- :mod:`~lmtune.active.strategies` and :mod:`~lmtune.active.diverse` turn answers into scores (entropy, margin,
  least confidence, committee, diverse, random); :mod:`~lmtune.active.selection` picks the budget's worth;
- :mod:`~lmtune.active.queue` writes the labelling queue;
- :mod:`~lmtune.active.experiment` runs the unattended oracle experiment, :mod:`~lmtune.active.results` and
  :mod:`~lmtune.active.page` turn it into ``active.json`` and ``active.html``.
"""
