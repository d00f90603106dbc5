"""Records as examples (``lmtune.data.formats``): six formats, field mapping, values checked, not stringified."""

import pytest

from lmtune.data.formats import detect, load_examples
from lmtune.errors import UserError

LABELS = ["negative", "neutral", "positive"]


def _examples(records, task="classification", labels=LABELS, fields=None):
    rows = [(f"f.jsonl:{i + 1}", r) for i, r in enumerate(records)]
    return load_examples(rows, fields or {}, task, labels)


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


def test_field_mapping_renames_columns_and_keeps_the_others_as_extra():
    exs = _examples([{"review": "good", "rating": "positive", "drug": "x"}],
                    fields={"text": "review", "label": "rating"})
    assert exs[0].record == {"text": "good", "label": "positive"} and exs[0].extra == {"drug": "x"}


def test_label_outside_the_task_labels_names_its_line():
    with pytest.raises(UserError, match="not one of task.labels") as info:
        _examples([{"text": "a", "label": "positive"}, {"text": "b", "label": "great"}])
    assert info.value.source == "f.jsonl:2"


def test_mixed_formats_name_the_first_record_of_another_format():
    with pytest.raises(UserError, match="mixed formats") as info:
        _examples([{"prompt": "p", "completion": "c"}, {"instruction": "i", "output": "o"}], task="generation")
    assert info.value.source == "f.jsonl:2"


def test_empty_field_names_its_line():
    with pytest.raises(UserError, match="empty") as info:
        _examples([{"text": "  ", "label": "positive"}])
    assert info.value.source == "f.jsonl:1"


def test_record_of_no_format_is_refused():
    with pytest.raises(UserError, match="matches no format"):
        _examples([{"body": "x"}])


def test_missing_mapped_column_is_named():
    with pytest.raises(UserError, match="column 'review'"):
        _examples([{"text": "x", "label": "positive"}], fields={"text": "review"})


def test_format_must_suit_task():
    with pytest.raises(UserError, match="cannot train a classification"):
        _examples([{"prompt": "p", "completion": "c"}])


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


def test_numbers_in_text_fields_are_written_out():
    ex = _examples([{"prompt": "2+2?", "completion": 4}], task="generation", labels=None)[0]
    assert ex.record["completion"] == "4"


def test_null_input_is_empty():
    alpaca = _examples([{"instruction": "i", "input": None, "output": "o"}], task="generation", labels=None)[0]
    assert alpaca.record["input"] == ""


def test_regression_label_is_a_float():
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
