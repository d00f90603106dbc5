"""``python -m lmtune.cli``: the ``lmtune`` command."""

from lmtune.cli import main

main()
