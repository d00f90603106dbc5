"""``lmtune curve``: the learning curve, the task metric against the number of training examples.

The curve directory (``--out``, default ``runs/<name>-curve``)::

    curve.json          one entry per point (n_train, the metric, its interval, state, seconds), the zero-shot
                        reference, the fit and its sentence; rewritten after every point
    curve.html          the plot (points with intervals on a log axis, the fit solid then dashed), the table
    curve.lock          held while a curve runs: a second curve of the same directory is refused
    points/n<size>-r<repeat>/   a point's run directory (train on a nested, stratified subset; scored on test)
    points/zero-shot/   the zero-shot reference, scored once (when eval.systems has zero_shot)

:mod:`~lmtune.curve.plan` checks everything before anything is trained or written, :mod:`~lmtune.curve.points`
runs the points (reusing finished ones, resuming interrupted ones), :mod:`~lmtune.curve.fit` fits the saturating
power law and :mod:`~lmtune.curve.page` draws the page.
"""
