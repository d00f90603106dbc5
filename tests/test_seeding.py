"""One seed for a whole run (``lmtune.seeding``): two runs of one recipe and seed are identical, bit for bit,
whatever state the global generators were in before."""

import torch


def _logged(run_dir) -> bytes:
    """``metrics.jsonl`` as written: what was learned, nothing measured (that goes to ``timing.jsonl``)."""
    return (run_dir / "metrics.jsonl").read_bytes()


def test_two_runs_of_one_recipe_and_seed_are_identical_bit_for_bit(recipe_file, tmp_path):
    from safetensors.torch import load_file

    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import load_recipe

    # Dropout on, so the loop's own random draws are compared too; nothing seeds torch before run_recipe.
    path = recipe_file(method={"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}},
                       training={"max_steps": 5, "log_every": 1, "eval_every": 2},
                       eval={"systems": ["finetuned"]})
    runs = []
    for name in ("one", "two"):
        torch.manual_seed(len(runs) + 123)  # whatever state the global generator is in before the run
        run_dir = run_recipe(load_recipe(path, []), tmp_path / name, quiet=True)
        weights = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
        runs.append((_logged(run_dir), weights))
    (logs_a, weights_a), (logs_b, weights_b) = runs
    assert logs_a.count(b"\n") >= 5 and logs_a == logs_b
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
