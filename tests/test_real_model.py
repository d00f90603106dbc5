"""One end-to-end run on the real packaged model (SmolLM2-135M-Instruct from PyPI, cached after the first run)."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from lmtune.cli import app
from lmtune.demo import demo_recipe_text


@pytest.mark.real_model
def test_train_on_the_packaged_model(tmp_path):
    recipe = yaml.safe_load(demo_recipe_text())
    recipe["data"]["max_records"] = 120
    recipe["training"].update(max_steps=3, batch_size=4, eval_every=3, max_length=192)
    recipe["eval"].update(max_examples=12, few_shot_k=1)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "alias" and manifest["model"]["sha256"]
    results = json.loads((out / "eval.json").read_text())["results"]
    assert set(results) == {"zero_shot", "few_shot", "finetuned"}
    assert all(0.0 <= r["f1_macro"] <= 1.0 for r in results.values())
    # The adapter is a few MB, not a copy of the 135M-parameter model.
    assert (out / "final" / "adapter_model.safetensors").stat().st_size < 50_000_000
