"""Reports: what a run (or several) measured, as HTML pages and a console table.

``page.py`` writes a run's ``report.html`` from its sections (``systems.py``: verdict and systems,
``classes.py``: confusion and per-class scores or example outputs, ``data.py``: the data report);
``compare.py`` writes the page of several runs side by side; ``verdict.py`` puts the verdict into words;
``html.py`` and ``plots.py`` are the page's building blocks; ``summary.py`` is the table printed at the
end of a run.
"""
