import json

import pytest
from conftest import write_jsonl
from tiny import build_tokenizer

from lmtune.data import io
from lmtune.data.clean import dedup_exact
from lmtune.data.encode import IGNORE, Encoder
from lmtune.data.formats import detect, load_examples
from lmtune.data.split import label_counts, split_examples
from lmtune.data.templates import TEMPLATES, render, resolve
from lmtune.errors import UserError

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
    exs = _examples([{"review": "good", "rating": "positive", "drug": "x"}],
                    fields={"text": "review", "label": "rating"})
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
    assert ("great stuff" in out.messages[-1]["content"]
            and "negative, neutral or positive" in out.messages[-1]["content"])
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
    exs = _examples([{"text": f"t{i}", "label": "positive"} for i in range(20)]
                    + [{"text": "lone", "label": "neutral"}])
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
    from lmtune.data.templates import resolve as resolve_template
    from lmtune.recipe import load_recipe
    from lmtune.tasks import encode_splits

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
    test = write_jsonl(tmp_path / "test.jsonl",
                       [{"text": "T1", "label": "neutral"}, {"text": "new", "label": "positive"}])
    recipe = recipe_from_dict({"name": "x", "model": "m", "task": {"labels": LABELS},
                               "data": {"train": str(train), "test": str(test),
                                        "split": {"validation": 0.2, "test": 0}}})
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


# --- hostile values and templates (issue items 6-10) ---------------------------------------------

@pytest.mark.parametrize("prompt", ["Review: {text", "Review: {}", "{text:>{width}}", "{0}", "{text!r}",
                                    "{text.upper}", "{text[0]}", "closing } alone"])
def test_malformed_template_placeholders_are_user_errors_before_any_record(prompt):
    from lmtune.data.templates import validate

    spec = {"prompt": prompt, "completion": "{label}"}
    with pytest.raises(UserError) as info:
        validate(spec)
    assert info.value.source == "task.template"
    with pytest.raises(UserError):
        resolve(spec, "classification")


def test_template_check_is_complete_without_a_model():
    from lmtune.data.templates import check, validate

    validate("sentiment")
    validate(None)
    ex = _examples([{"text": "a", "label": "positive", "meta": {"k": 1}}])[0]
    with pytest.raises(UserError, match="nonexistent"):
        check(resolve({"prompt": "{nonexistent}"}, ex.format), ex, LABELS)
    with pytest.raises(UserError, match="meta") as info:
        check(resolve({"prompt": "{text} {meta}", "completion": "{label}"}, ex.format), ex, LABELS)
    assert info.value.source == "f.jsonl:1"
    assert render(resolve({"prompt": "{{literal}} {text}", "completion": "{label}"}, ex.format), ex,
                  LABELS).messages[-1]["content"] == "{literal} a"


def test_instruction_template_takes_prompt_completion_records():
    from lmtune.data.templates import check

    ex = _examples([{"prompt": "Translate: bonjour", "completion": "hello"}], task="generation", labels=None)[0]
    template = resolve("instruction", ex.format)
    check(template, ex, None)
    out = render(template, ex, None)
    assert out.messages[-1]["content"] == "Translate: bonjour" and out.completion == "hello"
    alpaca = _examples([{"instruction": "Translate", "input": "bonjour", "output": "hello"}], task="generation",
                       labels=None)[0]
    assert render(resolve("completion", alpaca.format), alpaca, None).messages[-1]["content"] == "Translate\n\nbonjour"


@pytest.mark.parametrize("record, task, words", [
    ({"text": {"body": "x"}, "label": "positive"}, "classification", "struct"),
    ({"text": ["a", "b"], "label": "positive"}, "classification", "list"),
    ({"text": b"\x00bytes", "label": "positive"}, "classification", "binary"),
    ({"text": "x", "label": {"name": "positive"}}, "classification", "'label'"),
    ({"prompt": "p", "completion": True}, "generation", "boolean"),
    ({"instruction": "i", "input": {"a": 1}, "output": "o"}, "generation", "'input'"),
    ({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "y"}]}, "chat", "content"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ["y"]}]}, "chat", "content"),
    ({"prompt": "p", "chosen": " Same\tanswer", "rejected": "Same answer"}, "preference", "chosen and rejected"),
    ({"text": "x", "label": float("nan")}, "regression", "finite"),
    ({"text": "x", "label": "-inf"}, "regression", "finite"),
])
def test_values_that_are_not_text_are_refused_not_stringified(record, task, words):
    with pytest.raises(UserError, match=words) as info:
        _examples([record], task=task, labels=None)
    assert info.value.source == "f.jsonl:1"


def test_numbers_in_text_fields_are_written_out_and_null_input_is_empty():
    ex = _examples([{"prompt": "2+2?", "completion": 4}], task="generation", labels=None)[0]
    assert ex.record["completion"] == "4"
    alpaca = _examples([{"instruction": "i", "input": None, "output": "o"}], task="generation", labels=None)[0]
    assert alpaca.record["input"] == ""
    assert _examples([{"text": "x", "label": 7}], task="regression", labels=None)[0].record["label"] == 7.0


def test_column_named_in_error_when_mapped():
    with pytest.raises(UserError, match="column 'meta'"):
        _examples([{"meta": {"a": 1}, "rating": "positive"}], fields={"text": "meta", "label": "rating"})


def test_record_over_max_chars_names_the_key():
    rows = [("f.jsonl:1", {"text": "short", "label": "positive"}),
            ("f.jsonl:2", {"text": "x" * 101, "label": "positive"})]
    with pytest.raises(UserError, match="data.max_record_chars") as info:
        load_examples(rows, {}, "classification", LABELS, max_chars=100)
    assert info.value.source == "f.jsonl:2"


def test_bom_is_not_part_of_the_first_column_or_record(tmp_path):
    for name, body in (("b.csv", "text,label\nhi,positive\n"), ("b.tsv", "text\tlabel\nhi\tpositive\n"),
                       ("b.jsonl", '{"text": "hi", "label": "positive"}\n')):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert io.read_rows(tmp_path / name) == [(f"{tmp_path / name}:{1 if name.endswith('l') else 2}",
                                                  {"text": "hi", "label": "positive"})]


def test_csv_stray_quote_that_swallows_rows_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\nok,positive\n"hello,positive\nbye,negative\nfine",neutral\nlast,positive\n')
    with pytest.raises(UserError, match="stray") as info:
        io.read_rows(path)
    assert info.value.source == f"{path}:3"


def test_tsv_is_read_without_quote_processing(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('text\tlabel\n"a\tpositive\n"b\tnegative\nc"\tneutral\n"d"\tpositive\n')
    assert [r["text"] for _, r in io.read_rows(path)] == ['"a', '"b', 'c"', '"d"']


def test_deeply_nested_json_and_blank_files(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "a", "label": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(UserError, match="nested too deeply") as info:
        io.read_rows(deep)
    assert info.value.source == f"{deep}:1"
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n")
    with pytest.raises(UserError, match="blank"):
        io.read_rows(blank)


def test_utf8_error_in_csv_names_its_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\n" + b"fine,positive\n" * 3000 + b"caf\xe9,positive\n")
    with pytest.raises(UserError, match="UTF-8") as info:
        io.read_rows(path)
    assert info.value.source == f"{path}:3002"


def test_split_must_leave_two_training_records():
    exs = _examples([{"text": f"text {i}", "label": "positive"} for i in range(3)])
    with pytest.raises(UserError, match="training") as info:
        split_examples(exs, 0.5, seed=0, stratify=False, what="validation")
    assert info.value.source == "data.split.validation"


def test_check_names_why_a_format_was_detected_and_what_it_ignores(tmp_path):
    from lmtune.data.check import check_file, format_summary

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a", "id": i, "lang": "en"}) + "\n"
                            for i in range(3)))
    summary = check_file(path)
    assert summary["unused_columns"] == ["id", "lang"]
    text = format_summary(summary)
    assert "format completion (task generation): every record has 'prompt' and 'completion'" in text
    assert "warning: column 'id' is not used by format completion; it is ignored" in text
    assert "--field <field>=lang" in text and "label=" not in text
