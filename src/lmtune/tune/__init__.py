"""``lmtune tune``: a hyperparameter search over a recipe's ``search:`` space, on Optuna.

:mod:`.space` checks the space against the recipe schema and turns a trial's values into a recipe;
:mod:`.study` runs the search (a SQLite study beside the runs, each trial a run directory scored on the
validation split, pruned from its validation losses) and trains the best recipe with ``--final``;
:mod:`.page` writes ``tune.html`` and the console leaderboard.
"""
