"""``lmtune studio``: one local web app over a runs folder, where the iterate loop happens.

Pages are rendered on the server (:mod:`~lmtune.studio.layout` gives them one shell) and refreshed by
small scripts shipped in ``static/`` (no CDN: it works offline) that poll the JSON API under ``/api``.
Each page is one module with its routes: ``pages_runs`` (every run), ``pages_run`` (one run: curves,
verdict, systems, confusion, predictions, data), ``pages_compare`` and ``pages_new`` (start, cancel and
resume runs through the job worker of ``lmtune serve``). A new page (labelling, review) is one more module
whose router ``app.create_app`` includes. ``security`` guards every request: host, token, cross-site writes.
"""
