"""``lmtune data check`` (``lmtune.data.check``): every kind of bad data gives one line naming file:line,
exit code 2, no traceback; a good file gets its detected format, the reason, and the columns it ignores."""

import json
import tracemalloc

import hostile
import pytest

from lmtune.data.check import check_file

GOOD = '{"text": "fine review", "label": "positive"}\n'


CASES = {
    "malformed-json": (b'GOOD{"text": "x", "label": \n', 2, "not valid JSON"),
    "not-an-object": (b'GOOD["text", "label"]\n', 2, "not an object"),
    "missing-field": (b'GOOD{"text": "no label here"}\n', 2, "missing field 'label'"),
    "empty-field": (b'GOOD{"text": "", "label": "positive"}\n', 2, "is empty"),
    "mixed-formats": (b'GOOD{"prompt": "p", "completion": "c"}\n', 2, "a completion record cannot train"),
    "non-utf8": (b'GOOD{"text": "caf\xe9", "label": "positive"}\n', 2, "not UTF-8"),
    "label-outside": (b'GOOD{"text": "meh", "label": "lukewarm"}\n', 2, "not one of task.labels"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_check_bad_jsonl(tmp_path, name):
    content, line, words = CASES[name]
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(content.replace(b"GOOD", GOOD.encode()))
    proc = hostile.cli("data", "check", path, "--labels", "negative,neutral,positive", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:{line}: ") and words in lines[0]
    assert "Traceback" not in proc.stderr


def test_empty_file_is_one_error_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = hostile.cli("data", "check", empty, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {empty}: file is empty")


def test_ragged_csv_is_one_error_line_naming_the_row(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\ngood,positive\nbad,negative,extra\n")
    proc = hostile.cli("data", "check", ragged, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {ragged}:3: row has 3 fields")


def test_data_check_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "a review of modest length " * 8, "label": "positive"}) + "\n"
    with open(path, "w") as fh:
        for i in range(60_000):
            fh.write(line.replace("modest", f"modest {i}"))
    size = path.stat().st_size
    tracemalloc.start()
    summary = check_file(path, labels=["positive"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert summary["records"] == 60_000 and summary["exact_duplicates"] == 0
    # 12 bytes per record are kept, not the records: a fraction of the file's size.
    assert peak < size / 4, (peak, size)


def test_data_check_names_the_detected_format_and_warns_about_unused_columns(tmp_path):
    # {"text", "intent"} without --field used to pass silently as language-modelling text.
    path = tmp_path / "intents.jsonl"
    path.write_text("".join(json.dumps({"text": f"book a flight {i}", "intent": "travel"}) + "\n" for i in range(5)))
    proc = hostile.cli("data", "check", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "format text (task language_modeling): every record has 'text' and no 'label'" in proc.stdout
    assert ("warning: column 'intent' is not used by format text; if it is the label, pass --field label=intent"
            in proc.stdout)
    proc = hostile.cli("data", "check", path, "--field", "label=intent", cwd=tmp_path)
    assert proc.returncode == 0 and "warning" not in proc.stdout + proc.stderr
    assert "format classification (task classification): every record has 'text' and 'label'" in proc.stdout


def test_data_check_with_a_task_the_file_cannot_serve_is_an_error(tmp_path):
    path = tmp_path / "intents.jsonl"
    path.write_text(json.dumps({"text": "book a flight", "intent": "travel"}) + "\n")
    proc = hostile.cli("data", "check", path, "--task", "classification", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {path}:1: missing field 'label'")


def test_check_names_why_a_format_was_detected_and_what_it_ignores(tmp_path):
    from lmtune.data.check import format_summary

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a", "id": i, "lang": "en"}) + "\n"
                            for i in range(3)))
    summary = check_file(path)
    assert summary["unused_columns"] == ["id", "lang"]
    text = format_summary(summary)
    assert "format completion (task generation): every record has 'prompt' and 'completion'" in text
    assert "warning: column 'id' is not used by format completion; it is ignored" in text
    assert "--field <field>=lang" in text and "label=" not in text
