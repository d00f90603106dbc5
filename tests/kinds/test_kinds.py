"""The registries of task kinds, evaluation systems and methods: each entry's declared capabilities hold
everywhere they are asked, so a new entry needs nothing but itself."""

import pytest

from lmtune.data.formats import FORMATS
from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.kinds import systems as system_kinds
from lmtune.kinds.tasks import TASK_KINDS, TASK_TYPES, task_kind, tasks_of_format
from lmtune.methods import registry
from lmtune.recipe import recipe_from_dict

#: What a reward task needs beside its type: GRPO and its grader (training.grpo).
GRPO = {"grader": {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
                   "operation": "eq"}}


def _recipe(task="classification", systems=("zero_shot",), method="lora", **training):
    task_section = {"type": task, **({"labels": ["a", "b"]} if task_kind(task).labelled else {})}
    if task_kind(task).reward:
        training = {"grpo": GRPO, **training}
    return recipe_from_dict({"name": "r", "model": "tiny", "task": task_section, "data": {"train": "t.jsonl"},
                             "method": {"name": method}, "training": training,
                             "eval": {"systems": list(systems), "rag": {"corpus": "c.jsonl"}}})


def test_every_task_kind_reads_known_formats_and_every_format_is_read():
    names = {fmt.name for fmt in FORMATS}
    for kind in TASK_KINDS:
        assert set(kind.formats) <= names and set(kind.default_for) <= set(kind.formats), kind.name
    assert all(tasks_of_format(name) for name in names)


def test_every_task_kind_has_a_primary_metric_and_per_example_kinds_have_selectable_metrics():
    for kind in TASK_KINDS:
        if kind.reward:  # judged by its grader: eval.graders.reward, which every reward recipe ranks by
            assert _recipe(task=kind.name).eval.rank_by == "reward"
            continue
        assert kind.name in metrics.PRIMARY_METRIC, kind.name
        if kind.per_example:
            assert metrics.known_metrics(kind.name), kind.name
            assert kind.gap_metric in metrics.known_metrics(kind.name), kind.name


def test_every_task_type_is_a_valid_recipe_task():
    for name in TASK_TYPES:
        assert _recipe(task=name).task.type == name


def test_an_unknown_task_type_names_the_registered_ones():
    with pytest.raises(UserError) as err:
        task_kind("summarise")
    assert err.value.source == "task.type" and all(name in err.value.message for name in TASK_TYPES)


@pytest.mark.parametrize("name", [k.name for k in system_kinds.SYSTEM_KINDS if not k.other_model and not k.derived]
                         + ["model:org/x"])
def test_every_registered_system_is_accepted_by_the_recipe(name):
    assert _recipe(systems=[name]).eval.systems == [name]


def test_a_retrieval_system_needs_a_corpus():
    retrieval = [k.name for k in system_kinds.SYSTEM_KINDS if k.retrieval]
    raw = {"name": "r", "model": "tiny", "task": {"type": "generation"}, "data": {"train": "t.jsonl"},
           "eval": {"systems": retrieval[:1]}}
    with pytest.raises(UserError) as err:
        recipe_from_dict(raw)
    assert err.value.source == "eval.rag"


def test_model_prefix_alone_is_not_a_system():
    assert system_kinds.find("model:") is None and system_kinds.find("model:org/x").other_model


@pytest.mark.parametrize("shape,task,system", [
    ("TokenTask", "classification", "majority"), ("TokenTask", "language_modeling", "few_shot"),
    ("TokenTask", "language_modeling", "rag"), ("PreferenceTask", "preference", "few_shot"),
    ("HeadTask", "regression", "zero_shot"), ("HeadTask", "classification", "model:org/x")])
def test_a_system_outside_its_shapes_is_skipped_before_any_model_runs(shape, task, system):
    from lmtune import tasks

    shape = getattr(tasks, shape)(_recipe(task=task, systems=[system]))
    assert shape.run(system, None, None, None, None, [], [], [], [], True) is None


@pytest.mark.parametrize("name", registry.names())
def test_each_method_refuses_exactly_the_training_switches_its_capabilities_exclude(name):
    method = registry.get(name)
    for key, allowed in (("packing", not method.virtual_tokens), ("gradient_checkpointing", method.checkpointing)):
        if allowed:
            assert getattr(_recipe(method=name, **{key: True}).training, key) is True
        else:
            with pytest.raises(UserError) as err:
                _recipe(method=name, **{key: True})
            assert err.value.source == f"training.{key}"


def test_training_refuses_packing_for_soft_prompts_before_the_first_step(tmp_path):
    from tiny import build_model, build_tokenizer, train_settings

    from lmtune.train import loop

    model = registry.get("prompt_tuning").apply(build_model(len(build_tokenizer())), {"num_virtual_tokens": 2}, {})
    with pytest.raises(UserError) as err:
        loop.setup(model, [], [], train_settings(packing=True, max_length=32), tmp_path, 0)
    assert err.value.source == "training.packing"
    assert not (tmp_path / "metrics.jsonl").exists()
