"""``lmtune compare`` (``lmtune.report.compare``): several runs side by side, told apart, their differences listed,
and a warning when they were evaluated on different test sets."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from conftest import run_cli
from report_runs import REAL_SYSTEMS, make_realistic_run, write_file

from lmtune.report.compare import compare


def _compare_page(tmp_path, *runs: Path) -> str:
    return compare(list(runs), tmp_path / "compare.html").read_text(encoding="utf-8")


def test_compare_tells_apart_runs_of_one_recipe_by_their_directory(tmp_path):
    a = make_realistic_run(tmp_path, "lr-2e-4")
    b = make_realistic_run(tmp_path, "lr-5e-4", learning_rate=5e-4)
    page = _compare_page(tmp_path, a, b)
    assert "drug-review-sentiment (lr-2e-4)" in page and "drug-review-sentiment (lr-5e-4)" in page
    table = page[page.index("<h2>Systems</h2>"):]
    table = table[:table.index("</table>")]
    assert f'<th rowspan="{len(REAL_SYSTEMS)}">drug-review-sentiment (lr-2e-4)</th>' in table


def test_compare_warns_when_runs_were_evaluated_on_different_test_sets(tmp_path):
    a = make_realistic_run(tmp_path, "a")
    same = make_realistic_run(tmp_path, "b")
    assert "different test sets" not in _compare_page(tmp_path, a, same)
    other = make_realistic_run(tmp_path, "c", seed=7)
    page = _compare_page(tmp_path, a, other)
    assert '<p class="warning">' in page and "different test sets" in page


def test_compare_tells_test_sets_apart_in_runs_from_before_the_fingerprint(tmp_path):
    a = make_realistic_run(tmp_path, "a")
    same = make_realistic_run(tmp_path, "b")
    other = make_realistic_run(tmp_path, "c", seed=7)
    # Runs from before the fingerprint: the number of examples and where the split came from are compared.
    for run in (a, same, other):
        report = json.loads((run / "data" / "data_report.json").read_text())
        del report["test_sha256"]
        write_file(run / "data" / "data_report.json", json.dumps(report))
    assert "different test sets" not in _compare_page(tmp_path, a, same)
    assert "different test sets" in _compare_page(tmp_path, a, other)  # split off with another seed
    assert "different test sets" in _compare_page(tmp_path, a, make_realistic_run(tmp_path, "d", n=40))


def test_compare_lists_hyperparameter_differences(tmp_path):
    a = make_realistic_run(tmp_path, "a")
    b = make_realistic_run(tmp_path, "b", learning_rate=5e-4)
    page = _compare_page(tmp_path, a, b)
    diff = page[page.index("<h2>Hyperparameter differences</h2>"):]
    diff = diff[:diff.index("</table>")]
    assert "<th>training.learning_rate</th>" in diff and "0.0005" in diff
    assert "method.peft.r" not in diff  # the same in both


def test_compare_chart_has_intervals_and_baselines_show_no_finetuning_method(tmp_path):
    a = make_realistic_run(tmp_path, "a")
    b = make_realistic_run(tmp_path, "b", learning_rate=5e-4)
    page = _compare_page(tmp_path, a, b)
    assert 'alt="f1_macro per run and system with 95% intervals"' in page
    rows = re.findall(r"<tr>(.*?)</tr>", page[page.index("<h2>Systems</h2>"):], re.S)
    zero_shot = [r for r in rows if "<td>zero_shot</td>" in r]
    tuned = [r for r in rows if "<td>finetuned</td>" in r]
    assert zero_shot and all("lora" not in r and "prompting" in r for r in zero_shot)
    assert tuned and all("lora" in r for r in tuned)


def test_compare_refuses_a_directory_without_eval_json(tmp_path):
    code, output = run_cli("compare", tmp_path, "--out", tmp_path / "c.html")
    assert code == 2 and "no eval.json" in output


def test_a_run_records_its_load_and_test_set_and_compare_reads_them(recipe_file, tmp_path):
    recipe = recipe_file(eval={"systems": ["zero_shot", "few_shot"], "few_shot_k": 2})
    for seed, out in ((0, tmp_path / "a"), (1, tmp_path / "b")):
        code, output = run_cli("train", recipe, "--out", out, "--quiet", "--set", f"seed={seed}")
        assert code == 0, output
    body = json.loads((tmp_path / "a" / "eval.json").read_text())
    for result in body["results"].values():
        assert result["measured_at"]["cpu_count"] == os.cpu_count()
        assert result["measured_at"]["load_avg_1m"] >= 0
    fingerprint = json.loads((tmp_path / "a" / "data" / "data_report.json").read_text())["test_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    report = (tmp_path / "a" / "report.html").read_text()
    assert "measured at load average" in report and "Per-class scores" in report
    assert "method: <strong>none (baselines only)</strong>" in report  # nothing was trained, whatever method: says
    page = _compare_page(tmp_path, tmp_path / "a", tmp_path / "b")
    assert "tiny (a)" in page and "tiny (b)" in page
    assert "different test sets" in page  # another seed splits off other test reviews
