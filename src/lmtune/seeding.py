"""One seed for a whole run: python, numpy and torch, set once before any model or method code."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed every random number generator a run draws from (CPU and, where present, CUDA).

    Called once at the start of a run, before the model is loaded and before a method
    initialises its new weights (LoRA's A matrices, a classification head), so two runs of one
    recipe and seed start from the same weights and draw the same batches.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
