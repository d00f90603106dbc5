"""What a recipe can name, declared once: task kinds and evaluation systems, each a registry entry with capabilities.

Code asks an entry what it can do (``task_kind(t).labelled``, ``system_kind(s).trained``) instead of comparing
names, so a new task or system is one entry here (plus its behaviour where the entry says it differs).
Pure data: nothing here imports torch or any other lmtune package.
"""
