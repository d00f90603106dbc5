"""Serving: an OpenAI-compatible HTTP server (inference and fine-tuning jobs) over lmtune runs.

Three parts, and the error shape they share:

* ``http/``: the HTTP API. ``server.py`` starts it; ``app.py`` is the FastAPI app; ``inference.py``,
  ``task_api.py``, ``files.py`` and ``fine_tuning.py`` are its endpoints (``replies.py`` renders
  completion responses, ``schemas.py`` parses requests, ``limits.py`` bounds bodies, ``metrics.py``
  serves ``/metrics``).
* ``engine/``: decoding. ``models.py`` maps request model names onto engines; ``batching.py`` and
  ``decode.py`` are the continuous batcher, ``text.py`` turns tokens into text with stop strings;
  ``task.py`` serves a run as it was evaluated (``<run>:task``: its template on the raw input, label
  scoring).
* ``jobs/``: the fine-tuning jobs queue. ``store.py`` persists files and jobs, ``supervisor.py`` and
  ``worker.py`` run them, ``joblock.py`` keeps each job to one worker, and ``recipe.py`` turns a job
  request into a recipe.
* ``errors.py``: errors in the OpenAI API's shape, raised by all three.
"""
