"""Serving: an OpenAI-compatible HTTP server (inference and fine-tuning jobs) over lmtune runs.

``server.py`` starts it; ``app.py`` is the FastAPI app; ``inference.py``, ``files.py`` and
``fine_tuning.py`` are its endpoints (``replies.py`` renders completion responses);
``models.py`` maps request model names onto engines; ``task.py`` and ``task_api.py`` serve a run
as it was evaluated (``<run>:task``: its template on the raw input, label scoring);
``batching.py`` and ``decode.py`` are the continuous batcher; ``store.py``, ``supervisor.py`` and
``worker.py`` persist and run fine-tuning jobs, and ``joblock.py`` keeps each job to one worker.
"""
