"""The trained artefact of a run: ``final/`` with the model (or adapter), tokenizer and how to use it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmtune import tasks
from lmtune.recipe import Recipe
from lmtune.run_dir import write_model_info


def save_final(final: Path, model, tokenizer, method, recipe: Recipe, source) -> None:
    """Write the trained artefact, tokenizer (with its chat template) and how to use it, atomically."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    method.save(model, tmp)
    tokenizer.save_pretrained(tmp)
    info = {"base_model": recipe.model.name, "base_model_source": source.to_dict(), "method": recipe.method.name,
            "task": recipe.task.model_dump(mode="json"), "head": tasks.uses_head(recipe),
            "max_length": recipe.training.max_length}
    write_model_info(tmp, info)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
