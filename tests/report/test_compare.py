"""``lmtune compare`` (``lmtune.report.compare``): several runs side by side, told apart, their differences listed,
and a warning when they were evaluated on different test sets."""

from __future__ import annotations

import html
import json
import math
import os
import random
import re
from pathlib import Path

import pytest
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
    systems = page[page.index("<h2>Systems</h2>"):]
    rows = re.findall(r"<tr>(.*?)</tr>", systems[:systems.index("</table>")], re.S)
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


def _rows(page: str, css: str) -> list[list[str]]:
    """The cells of ``<table class="css">``'s body rows, as text."""
    table = page[page.index(f'<table class="{css}">'):]
    table = table[:table.index("</table>")].replace("<wbr>", "")
    body = table[table.index("<tbody>"):]
    cells = r"<t[hd][^>]*>(.*?)</t[hd]>"
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(cells, row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_compare_pairs_each_run_with_the_first_on_the_same_examples(tmp_path):
    from lmtune.evaluate import bootstrap

    first = make_realistic_run(tmp_path, "first")
    other = make_realistic_run(tmp_path, "other", seed=7)  # the same examples, other predictions
    fewer = make_realistic_run(tmp_path, "fewer", n=40)
    page = _compare_page(tmp_path, first, other, fewer)
    rows = _rows(page, "paired")
    assert [r[0] for r in rows] == ["drug-review-sentiment (other)", "drug-review-sentiment (fewer)"]
    preds = {run: [json.loads(line) for line in (run / "predictions" / "finetuned.jsonl").read_text().splitlines()]
             for run in (first, other)}
    expected = bootstrap.paired_difference("classification", "f1_macro", [r["reference"] for r in preds[first]],
                                           [r["prediction"] for r in preds[other]],
                                           [r["prediction"] for r in preds[first]],
                                           json.loads((first / "eval.json").read_text())["labels"])
    f1 = {run: json.loads((run / "eval.json").read_text())["results"]["finetuned"]["f1_macro"]
          for run in (first, other)}
    assert expected["value"] == pytest.approx(f1[other] - f1[first]) and expected["value"] != 0
    assert rows[0][1:] == ["finetuned", "f1_macro", f"{f1[other]:.4g}", f"{f1[first]:.4g}",
                           f"{expected['value']:.4g}", f"{expected['ci_low']:.4g} to {expected['ci_high']:.4g}",
                           f"{expected['p_value']:.4g}"]
    assert rows[1][1:] == ["finetuned", "f1_macro", "not paired: the runs' test examples differ"]
    code, output = run_cli("compare", first, other, fewer, "--out", tmp_path / "cli.html")
    assert code == 0, output
    assert output.splitlines()[1:] == [
        f"drug-review-sentiment (other): finetuned f1_macro {f1[other]:.4g} vs {f1[first]:.4g} "
        f"(drug-review-sentiment (first)): {expected['value']:+.4g} [{expected['ci_low']:.4g}, "
        f"{expected['ci_high']:.4g}], p = {expected['p_value']:.4g}",
        "drug-review-sentiment (fewer): finetuned f1_macro: not paired with drug-review-sentiment (first) "
        "(the runs' test examples differ)"]
    assert "paired differences" not in _compare_page(tmp_path, first)


def _with_probes(run: Path, blocks: list[list[float]], correct: list[int]) -> None:
    """Forgetting probes in ``run``'s eval.json: a perplexity probe from ``blocks`` ([nll, tokens] per block of the
    fine-tuned model; the base model's are fixed) and an accuracy probe from ``correct``."""
    from lmtune.evaluate import forgetting

    base_units = [[2.0 * t, t] for _, t in blocks]

    def measured(units, right):
        nll, tokens = sum(u[0] for u in units), sum(u[1] for u in units)
        return {"wiki": {"kind": "perplexity", "perplexity": math.exp(nll / tokens), "units": units},
                "mmlu": {"kind": "multiple_choice", "accuracy": sum(right) / len(right), "correct": right}}
    body = json.loads((run / "eval.json").read_text())
    base, tuned = measured(base_units, [1, 0] * (len(correct) // 2)), measured(blocks, correct)
    body["forgetting"] = {"base": base, "finetuned": tuned, "change": forgetting.compare(base, tuned)}
    write_file(run / "eval.json", json.dumps(body))


def test_compare_puts_every_runs_forgetting_side_by_side_and_pairs_its_probes(tmp_path):
    from lmtune.evaluate import forgetting

    rng = random.Random(0)
    first, other = make_realistic_run(tmp_path, "first"), make_realistic_run(tmp_path, "other")
    blocks_first = [[2.1 * 100 + rng.random(), 100] for _ in range(30)]
    blocks_other = [[2.0 * 100 + rng.random(), 100] for _ in range(30)]
    _with_probes(first, blocks_first, [rng.randint(0, 1) for _ in range(40)])
    _with_probes(other, blocks_other, [rng.randint(0, 1) for _ in range(40)])
    page = _compare_page(tmp_path, first, other)
    table = _rows(page, "forgetting")
    assert [(r[0], r[1]) for r in table] == [(label, probe) for label in ("drug-review-sentiment (first)",
                                                                          "drug-review-sentiment (other)")
                                             for probe in json.loads((first / "eval.json").read_text())
                                             ["forgetting"]["change"]]
    expected = forgetting.compare(*(json.loads((run / "eval.json").read_text())["forgetting"]["finetuned"]
                                    for run in (first, other)))
    probes = {r[1]: r for r in _rows(page, "paired")[1:]}
    for probe, c in expected.items():
        row = probes[f"probe {probe}"]
        assert row[3:] == [f"{c['after']:.4g}", f"{c['before']:.4g}", f"{c['change']:.4g}",
                           f"{c['ci_low']:.4g} to {c['ci_high']:.4g}", f"{c['p_value']:.4g}"]
    assert expected["wiki"]["change"] < 0 and expected["wiki"]["p_value"] < 0.05  # lower perplexity, clearly
    plain = make_realistic_run(tmp_path, "plain")
    assert "Forgetting" not in _compare_page(tmp_path, plain, make_realistic_run(tmp_path, "plain2"))
