"""The HTTP API: routes, request and response shapes, the server process (see :mod:`lmtune.serve`)."""
