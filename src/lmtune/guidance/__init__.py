"""Human guidance: labelling queues, corrections of gold labels, and blind A/B preference judgements.

The studio's pages (``studio/pages_label``, ``pages_review``, ``pages_judge``) are the way in; what they store
lives here, in one SQLite database in WAL mode (:mod:`lmtune.guidance.db`) beside the studio's other files, so a
label is committed before the next record shows and a killed server loses nothing.
"""
