import json

import pytest

from conftest import write_jsonl
from lmtune.data import io
from lmtune.data.clean import dedup_exact
from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import detect, load_examples
from lmtune.data.split import label_counts, split_examples
from lmtune.data.templates import TEMPLATES, render, resolve
from lmtune.errors import UserError
from tiny import build_tokenizer

LABELS = ["negative", "neutral", "positive"]


def _examples(records, task="classification", labels=LABELS, fields=None):
    rows = [(f"f.jsonl:{i + 1}", r) for i, r in enumerate(records)]
    return load_examples(rows, fields or {}, task, labels)


# --- readers -------------------------------------------------------------------------------------

def test_jsonl_broken_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(UserError) as info:
        io.read_rows(path)
    assert info.value.source == f"{path}:2"


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(UserError, match="not an object") as info:
        io.read_rows(path)
    assert info.value.source.endswith(":2")


def test_empty_file_and_non_utf8(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        io.read_rows(empty)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match="UTF-8") as info:
        io.read_rows(latin)
    assert info.value.source.endswith(":2")


def test_csv_reads_and_ragged_row_is_reported(tmp_path):
    good = tmp_path / "g.csv"
    good.write_text('text,label\n"hello, world",positive\nbye,negative\n')
    rows = io.read_rows(good)
    assert rows[0][1] == {"text": "hello, world", "label": "positive"} and rows[1][0] == f"{good}:3"
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,label\na,positive\nb,negative,extra\n")
    with pytest.raises(UserError) as info:
        io.read_rows(ragged)
    assert info.value.source == f"{ragged}:3"


def test_parquet_and_tsv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", "y"]}), tmp_path / "d.parquet")
    assert [r for _, r in io.read_rows(tmp_path / "d.parquet")][1] == {"text": "b", "label": "y"}
    (tmp_path / "d.tsv").write_text("text\tlabel\nhi there\tpositive\n")
    assert io.read_rows(tmp_path / "d.tsv")[0][1]["text"] == "hi there"


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(UserError, match="unknown data format"):
        io.read_rows(tmp_path / "d.xml")
    with pytest.raises(UserError, match="no such data file"):
        io.read_rows(tmp_path / "missing.jsonl")


# --- formats -------------------------------------------------------------------------------------

@pytest.mark.parametrize("record, name", [
    ({"text": "t", "label": "x"}, "classification"),
    ({"prompt": "p", "completion": "c"}, "completion"),
    ({"instruction": "i", "input": "", "output": "o"}, "instruction"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "chat"),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
    ({"text": "raw text"}, "text"),
])
def test_six_formats_detected(record, name):
    assert detect(record).name == name


def test_field_mapping_and_label_check():
    exs = _examples([{"review": "good", "rating": "positive", "drug": "x"}], fields={"text": "review", "label": "rating"})
    assert exs[0].record == {"text": "good", "label": "positive"} and exs[0].extra == {"drug": "x"}
    with pytest.raises(UserError, match="not one of task.labels") as info:
        _examples([{"text": "a", "label": "positive"}, {"text": "b", "label": "great"}])
    assert info.value.source == "f.jsonl:2"


def test_mixed_formats_and_missing_or_empty_fields():
    with pytest.raises(UserError, match="mixed formats") as info:
        _examples([{"prompt": "p", "completion": "c"}, {"instruction": "i", "output": "o"}], task="generation")
    assert info.value.source == "f.jsonl:2"
    with pytest.raises(UserError, match="empty") as info:
        _examples([{"text": "  ", "label": "positive"}])
    assert info.value.source == "f.jsonl:1"
    with pytest.raises(UserError, match="matches no format"):
        _examples([{"body": "x"}])
    with pytest.raises(UserError, match="column 'review'"):
        _examples([{"text": "x", "label": "positive"}], fields={"text": "review"})


def test_format_must_suit_task():
    with pytest.raises(UserError, match="cannot train a classification"):
        _examples([{"prompt": "p", "completion": "c"}])


# --- templates -----------------------------------------------------------------------------------

def test_template_library_has_the_basics():
    for name in ("sentiment", "classification", "summarization", "question_answering", "instruction"):
        assert name in TEMPLATES


def test_render_by_name_inline_and_chat():
    ex = _examples([{"text": "great stuff", "label": "positive"}])[0]
    out = render(resolve("sentiment", ex.format), ex, LABELS)
    assert "great stuff" in out.messages[-1]["content"] and "negative, neutral or positive" in out.messages[-1]["content"]
    assert out.completion == "positive"
    inline = resolve({"prompt": "Text: {text}", "completion": "{label}"}, ex.format)
    assert render(inline, ex, LABELS).messages == [{"role": "user", "content": "Text: great stuff"}]
    chat = _examples([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
                     task="chat", labels=None)[0]
    rendered = render(resolve(None, chat.format), chat, None)
    assert rendered.messages == [{"role": "user", "content": "hi"}] and rendered.completion == "yo"


def test_unknown_template_and_placeholder():
    from lmtune.data.templates import check

    with pytest.raises(UserError, match="unknown template") as info:
        resolve("poem", "classification")
    assert info.value.source == "task.template"
    ex = _examples([{"text": "a", "label": "positive"}])[0]
    with pytest.raises(UserError, match="question"):
        check(resolve({"prompt": "{question}"}, ex.format), ex, LABELS)


# --- split and dedup -----------------------------------------------------------------------------

def _balanced(n=90):
    return _examples([{"text": f"text {i}", "label": LABELS[i % 3]} for i in range(n)])


def test_split_is_seeded_and_stratified():
    exs = _balanced()
    kept, held = split_examples(exs, 0.2, seed=1, stratify=True, what="test")
    assert len(held) == 18 and len(kept) == 72
    assert label_counts(held) == {"negative": 6, "neutral": 6, "positive": 6}
    again, _ = split_examples(_balanced(), 0.2, seed=1, stratify=True, what="test")
    assert [e.source for e in kept] == [e.source for e in again]
    other, _ = split_examples(_balanced(), 0.2, seed=2, stratify=True, what="test")
    assert [e.source for e in kept] != [e.source for e in other]


def test_split_that_starves_a_class_is_a_user_error():
    exs = _examples([{"text": f"t{i}", "label": "positive"} for i in range(20)] + [{"text": "lone", "label": "neutral"}])
    with pytest.raises(UserError, match="too few") as info:
        split_examples(exs, 0.2, seed=0, stratify=True, what="test")
    assert info.value.source == "data.split.test"


def test_exact_dedup_keeps_first_and_flags_conflicts():
    exs = _examples([{"text": "Same  text", "label": "positive"}, {"text": "same text", "label": "negative"},
                     {"text": "other", "label": "neutral"}, {"text": "OTHER", "label": "neutral"}])
    kept, report = dedup_exact(exs)
    assert [e.source for e in kept] == ["f.jsonl:1", "f.jsonl:3"]
    assert report["exact_duplicates"] == 2 and report["conflicting_targets"] == 1


# --- encoding ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_prompt_tokens_are_masked_and_eos_ends_the_target(tok):
    enc = Encoder(tok, max_length=64)
    e = enc.encode([{"role": "user", "content": "the movie was great"}], "positive")
    n_prompt = len(enc.prompt_ids([{"role": "user", "content": "the movie was great"}]))
    assert all(t == IGNORE for t in e.labels[:n_prompt])
    assert e.labels[n_prompt:] == e.input_ids[n_prompt:]
    assert e.input_ids[-1] == tok.eos_token_id and e.labels[-1] == tok.eos_token_id
    assert e.n_targets == len(tok("positive", add_special_tokens=False)["input_ids"]) + 1


def test_truncation_is_counted_and_keeps_the_target(tok):
    enc = Encoder(tok, max_length=24)
    long_text = " ".join(["the movie was terrible and boring"] * 20)
    e = enc.encode([{"role": "user", "content": long_text}], "negative")
    assert e.truncated and len(e.input_ids) == 24
    assert e.input_ids[-1] == tok.eos_token_id and e.n_targets >= 2
    short = enc.encode([{"role": "user", "content": "ok"}], "neutral")
    assert not short.truncated


def test_pipeline_counts_truncation_in_the_report(recipe_file, tmp_path):
    from lmtune.data import prepare as data_stage
    from lmtune.tasks import encode_splits
    from lmtune.data.templates import resolve as resolve_template
    from lmtune.recipe import load_recipe

    recipe = load_recipe(recipe_file(training={"max_length": 12}))
    prepared = data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed)
    enc = Encoder(build_tokenizer(), 12)
    encode_splits(prepared, enc, resolve_template("sentiment", "classification"), recipe)
    trunc = prepared.report["truncation"]
    assert trunc["train"]["truncated"] == trunc["train"]["total"] > 0
    data_stage.write(prepared, tmp_path / "data")
    report = json.loads((tmp_path / "data" / "data_report.json").read_text())
    assert report["truncation"]["max_length"] == 12
    assert report["counts"]["train"] + report["counts"]["validation"] + report["counts"]["test"] == 60


def test_prepare_removes_test_inputs_from_train(tmp_path):
    from lmtune.data import prepare as data_stage
    from lmtune.recipe import recipe_from_dict

    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": LABELS[i % 3]} for i in range(30)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "T1", "label": "neutral"}, {"text": "new", "label": "positive"}])
    recipe = recipe_from_dict({"name": "x", "model": "m", "task": {"labels": LABELS},
                               "data": {"train": str(train), "test": str(test), "split": {"validation": 0.2, "test": 0}}})
    prepared = data_stage.prepare(recipe.data, "classification", LABELS, 0)
    assert prepared.report["leakage"]["exact"] == 1 and prepared.report["leakage"]["dropped_from_train"] == 1
    assert len(prepared.splits["train"]) + len(prepared.splits["validation"]) == 29


def test_empty_records_dropped_and_counted_when_asked(tmp_path):
    from lmtune.data import prepare as data_stage
    from lmtune.recipe import recipe_from_dict

    rows = [{"prompt": f"p{i}", "completion": "" if i % 5 == 0 else "c"} for i in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    raw = {"name": "x", "model": "m", "task": {"type": "generation"},
           "data": {"train": str(train), "split": {"validation": 0.1, "test": 0.1, "stratify": False}}}
    with pytest.raises(UserError, match="data.clean.empty: drop") as info:
        data_stage.prepare(recipe_from_dict(raw).data, "generation", None, 0)
    assert info.value.source == f"{train}:1"
    raw["data"]["clean"] = {"empty": "drop"}
    prepared = data_stage.prepare(recipe_from_dict(raw).data, "generation", None, 0)
    step = next(s for s in prepared.report["steps"] if s["step"] == "empty fields dropped")
    assert step["records"] == 24 and step["removed"] == 6
    assert sum(len(v) for v in prepared.splits.values()) == 24
