"""Experiment trackers beside ``metrics.jsonl``: TensorBoard, MLflow, W&B and trackio, all offline.

``registry`` names them (``tracking:`` in a recipe) and says which optional extra each needs; ``base``
is what a backend implements; ``session`` opens a run's trackers together and feeds them the loop's
log lines, the evaluation results with their intervals, and the report and manifest.
"""
