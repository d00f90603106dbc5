"""``lmtune report RUN...`` re-renders each run's report.html from its files, and refuses a folder that is no run."""

from __future__ import annotations

from conftest import run_cli
from report_runs import make_run


def test_report_rerenders_a_run_from_its_files(tmp_path):
    run = make_run(tmp_path)
    (run / "report.html").write_text("stale", encoding="utf-8")
    recipe = run / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("name: demo-classification", "name: renamed-later"))
    code, out = run_cli("report", run)
    assert code == 0, out
    assert out.strip() == f"report: {run / 'report.html'}"
    page = (run / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>renamed-later</title>" in page


def test_report_refuses_a_folder_that_is_no_run_before_writing_any(tmp_path):
    run = make_run(tmp_path)
    code, out = run_cli("report", run, tmp_path / "missing")
    assert code == 2
    assert out.strip().splitlines() == [f"error: {tmp_path / 'missing'}: not a run directory; pass a folder "
                                         "written by `lmtune train` or `lmtune eval`"]
    assert not (run / "report.html").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = run_cli("report", empty)
    assert code == 2 and out.startswith(f"error: {empty}: no recipe.yaml or eval.json found")
