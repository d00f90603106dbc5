"""The tiny GRPO runs' recipe (``task.type: reward``): prompts the tiny model's random answers satisfy about half
the time, graded by a ``string_check``, so that groups' rewards differ."""

from conftest import write_jsonl

QUESTIONS = ["the movie was great and i loved it", "this drug gave me awful side effects",
             "it was fine, nothing special", "this drug helped my pain a lot"]
# A string_check the tiny model's random outputs pass about half the time: groups whose rewards differ.
LIKE_E = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.letter}}",
          "operation": "like"}


def grpo_with(**changes) -> dict:
    """The tiny runs' training.grpo, with ``changes``."""
    return {"grader": LIKE_E, "num_generations": 4, "max_completion_length": 8, **changes}


def reward_training() -> dict:
    return {"max_steps": 4, "batch_size": 2, "learning_rate": 5e-2, "eval_every": 2, "log_every": 1, "max_length": 64,
            "precision": "fp32", "grpo": grpo_with()}


def reward_recipe(tmp_path, model_dir, **sections):
    import yaml

    records = [{"prompt": f"{QUESTIONS[i % 4]} {i}", "letter": "e"} for i in range(40)]
    data = write_jsonl(tmp_path / "prompts.jsonl", records)
    recipe = {"name": "grpo", "seed": 0, "model": str(model_dir), "task": {"type": "reward"},
              "data": {"train": str(data), "split": {"validation": 0.1, "test": 0.2, "stratify": False}},
              "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
              "training": reward_training(),
              "eval": {"systems": ["zero_shot", "few_shot", "finetuned"], "max_new_tokens": 8}}
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "reward.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path
