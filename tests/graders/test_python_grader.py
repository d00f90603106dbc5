"""The python grader: OpenAI's ``grade(sample, item)`` in a subprocess, one process per batch; a sample whose
grader raises, returns no number, crashes or overruns its time limit scores 0, is counted, and the batch goes
on; the limit is honoured within a second."""

from __future__ import annotations

import os
import time

import pytest

from lmtune import graders
from lmtune.errors import UserError

SOURCE = '''
import os
import time

def grade(sample, item):
    mode = item.get("mode")
    if mode == "raise":
        raise ValueError("no answer field")
    if mode == "sleep":
        time.sleep(60)
    if mode == "nan":
        return float("nan")
    if mode == "text":
        return "high"
    if mode == "print":
        print("a grader that prints", 0.5)  # must not be read as a result
    if mode == "exit":
        os._exit(3)
    if mode == "pid":
        return os.getpid()
    if mode == "catch":
        try:
            time.sleep(60)
        except Exception:  # the time limit is not an Exception: it cannot be swallowed by mistake
            return 1.0
    return 1.0 if sample["output_text"].strip() == str(item["answer"]) else 0.25
'''


def _grader(timeout_s: float = 1.0, **config):
    return graders.build({"type": "python", "name": "py", "source": SOURCE, "timeout_s": timeout_s, **config})


def test_a_correct_grader_scores_every_sample():
    result = _grader().grade(["4", " 4 ", "5", '{"a": 1}'], [{"answer": 4}, {"answer": 4}, {"answer": 4},
                                                              {"answer": '{"a": 1}'}])
    assert result.scores == [1.0, 1.0, 0.25, 1.0]
    assert result.problems == 0 and result.messages == []


def test_a_grader_that_raises_or_returns_no_number_scores_zero_and_is_counted():
    items = [{"answer": 1}, {"mode": "raise"}, {"mode": "nan"}, {"mode": "text"}, {"answer": 1}]
    result = _grader().grade(["1", "x", "x", "x", "1"], items)
    assert result.scores == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert (result.errors, result.timeouts, result.unparsable) == (3, 0, 0)
    assert result.messages[0] == "sample 1: ValueError: no answer field"
    assert any("nan" in m for m in result.messages) and any("'high'" in m for m in result.messages)


def test_printing_does_not_corrupt_the_results():
    result = _grader().grade(["1", "2"], [{"mode": "print", "answer": 1}, {"mode": "print", "answer": 1}])
    assert result.scores == [1.0, 0.25] and result.problems == 0


def test_a_sample_past_the_limit_is_a_timeout_within_a_second_and_the_rest_are_graded():
    items = [{"answer": 1}, {"mode": "sleep"}, {"mode": "catch"}, {"answer": 1}]
    started = time.monotonic()
    result = _grader(timeout_s=1.0).grade(["1", "x", "x", "1"], items)
    elapsed = time.monotonic() - started
    assert result.scores == [1.0, 0.0, 0.0, 1.0]
    assert (result.timeouts, result.errors) == (2, 0)
    assert "took longer than 1 s" in result.messages[0]
    # two samples of 1 s each, plus the process's start: far from the 60 s they would sleep
    assert 2 * 1.0 <= elapsed < 2 * 1.0 + 1.0 + 1.0, elapsed


def test_a_crashed_worker_costs_one_sample_and_a_new_one_grades_the_rest():
    items = [{"answer": 1}, {"mode": "exit"}, {"answer": 1}, {"mode": "pid"}]
    result = _grader().grade(["1", "x", "1", "x"], items)
    assert result.scores[:3] == [1.0, 0.0, 1.0] and result.scores[3] > 0
    assert result.errors == 1 and "exit code 3" in result.messages[0]


def test_one_process_grades_the_whole_batch():
    result = _grader().grade(["x"] * 6, [{"mode": "pid"}] * 6)
    assert len(set(result.scores)) == 1 and result.scores[0] != os.getpid()


def test_a_file_grader_imports_modules_beside_it(tmp_path):
    (tmp_path / "helpers.py").write_text("def normalise(text):\n    return text.strip().lower()\n")
    (tmp_path / "grader.py").write_text("from helpers import normalise\n\n"
                                        "def grade(sample, item):\n"
                                        "    return float(normalise(sample['output_text']) == item['answer'])\n")
    grader = graders.build({"type": "python", "file": str(tmp_path / "grader.py")}, name="file_grader")
    assert grader.name == "file_grader"
    assert grader.grade([" Paris", "Lyon"], [{"answer": "paris"}] * 2).scores == [1.0, 0.0]


def test_source_that_fails_on_import_scores_every_sample_zero():
    grader = graders.build({"type": "python", "source": "import no_such_module_here\n\ndef grade(s, i):\n  return 1"})
    result = grader.grade(["a", "b"], [{}, {}])
    assert result.scores == [0.0, 0.0] and result.errors == 2
    assert "ModuleNotFoundError" in result.messages[0]


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        graders.build({"type": "python", "file": str(tmp_path / "missing.py")}, source="eval.graders.py")
    (tmp_path / "other.py").write_text("def score(sample, item):\n    return 1.0\n")
    with pytest.raises(UserError, match="grade"):
        graders.build({"type": "python", "file": str(tmp_path / "other.py")})
