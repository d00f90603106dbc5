"""Reading a pool: the target a labeller fills is found per task and format, a label the pool carries is dropped
(and counted) without ``--oracle``, and with it the hidden value becomes training data in the recipe's format."""

import pytest
from conftest import write_jsonl

from lmtune.active.pool import read_pool
from lmtune.data.templates import TEMPLATES, render
from lmtune.errors import UserError
from lmtune.recipe import recipe_from_dict


def recipe(task, fields=None, labels=None, template=None):
    return recipe_from_dict({"name": "pool", "model": "unused", "data": {"train": "unused.jsonl",
                                                                         "fields": fields or {}},
                             "task": {"type": task, "labels": labels, "template": template}})


def test_a_label_in_the_pool_is_dropped_and_counted_and_prompts_render_without_it(tmp_path, capsys):
    rec = recipe("classification", {"text": "review", "label": "rating"}, ["negative", "positive"], "sentiment")
    path = write_jsonl(tmp_path / "pool.jsonl", [{"review": "great", "rating": "positive", "id": 1},
                                                 {"review": "awful", "id": 2}])
    pool = read_pool(path, rec)
    assert pool.carried_labels == 1 and pool.records == [{"review": "great", "id": 1}, {"review": "awful", "id": 2}]
    assert "1 pool records carry a label; it is ignored" in capsys.readouterr().err
    rendered = render(TEMPLATES["sentiment"], pool.examples[0], rec.task.labels)
    assert "Review: great" in rendered.messages[-1]["content"] and rendered.completion == ""
    assert pool.lines == [1, 2] and pool.gold is None


def test_the_oracle_label_is_checked_and_becomes_the_recipe_column(tmp_path):
    rec = recipe("classification", {"text": "review", "label": "rating"}, ["negative", "positive"])
    path = write_jsonl(tmp_path / "pool.jsonl", [{"review": "great", "truth": " Positive"},
                                                 {"review": "awful", "truth": "negative", "rating": "positive"}])
    pool = read_pool(path, rec, oracle="truth")
    assert pool.gold == ["positive", "negative"] and pool.carried_labels == 0
    assert pool.labelled(0, "rating") == {"review": "great", "rating": "positive"}
    assert pool.labelled(1, "rating") == {"review": "awful", "rating": "negative"}  # the oracle's, not the pool's
    assert pool.solved(1).record["label"] == "negative" and pool.examples[1].record["label"] == ""


def test_generation_pools_fill_completion_output_or_the_last_chat_turn(tmp_path):
    rec = recipe("generation", {"completion": "answer"})
    completion = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "2+2?", "answer": "4", "gold": "four"}])
    pool = read_pool(completion, rec, oracle="gold")
    assert pool.target == "completion" and pool.labelled(0, "answer") == {"prompt": "2+2?", "answer": "four"}
    instruction = write_jsonl(tmp_path / "i.jsonl", [{"instruction": "add", "input": "2 2", "gold": "4"}])
    assert read_pool(instruction, recipe("generation"), oracle="gold").labelled(0, "output") == {
        "instruction": "add", "input": "2 2", "output": "4"}
    chat = write_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "hello"}]},
                                              {"messages": [{"role": "user", "content": "bye"}], "gold": "ciao"}])
    plain = read_pool(chat, recipe("chat"))
    assert plain.target == "messages" and plain.carried_labels == 1
    assert plain.records[0]["messages"] == [{"role": "user", "content": "hi"}]
    with pytest.raises(UserError, match=r"m.jsonl:1: no value in field 'gold'"):
        read_pool(chat, recipe("chat"), oracle="gold")


def test_mixed_formats_are_refused_naming_the_line(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"instruction": "b"}])
    with pytest.raises(UserError, match=r"p.jsonl:2: mixed formats"):
        read_pool(path, recipe("generation"))
