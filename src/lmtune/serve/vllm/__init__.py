"""``lmtune serve --engine vllm``: vLLM's OpenAI server does the inference, lmtune keeps the rest of the API.

:mod:`.plan` decides whether the runs can be served by one vLLM server and builds its command line;
:mod:`.process` starts it, waits until it answers, watches it and stops it. The requests themselves
go through :class:`lmtune.serve.upstream.Upstream`.
"""
