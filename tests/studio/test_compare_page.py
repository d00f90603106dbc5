"""The studio's Compare page: runs side by side, their metrics with intervals, overlaid curves, recipe differences,
the test-set warning, the picker, and the refusals (unknown runs, too many runs, escaping)."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient
from studio_runs import studio_run

from lmtune.run_dir import RunDir
from lmtune.studio.app import Studio, create_app


def _client(root) -> TestClient:
    return TestClient(create_app(Studio(root, hosts={"testserver"})))


def _section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}")
    end = page.find("<h2>", start + 4)
    return page[start:end if end > 0 else len(page)].replace("<wbr>", "")


def test_compare_lists_only_the_recipe_keys_that_differ(tmp_path):
    studio_run(tmp_path, "lr-2e-4", seed=42, learning_rate=2e-4)
    studio_run(tmp_path, "lr-5e-4", seed=7, learning_rate=5e-4)
    response = _client(tmp_path).get("/compare?run=lr-2e-4&run=lr-5e-4")
    assert response.status_code == 200
    recipe = _section(response.text, "Recipe differences")
    shown = recipe[:recipe.index("<details>")]
    assert "<th>training.learning_rate</th>" in shown and "<th>seed</th>" in shown
    assert "<th>seed</th><td>42</td><td>7</td>" in shown and "<td>0.0005</td>" in shown
    for same in ("method.name", "method.peft.r", "training.epochs", "task.type", "name"):
        assert f"<th>{same}</th>" not in shown, same
    every = recipe[recipe.index("<details>"):]
    assert "<th>method.peft.r</th>" in every and "<th>training.learning_rate</th>" in every


def test_metrics_table_has_both_runs_with_intervals_and_the_best_in_bold(tmp_path):
    studio_run(tmp_path, "a", seed=42)
    studio_run(tmp_path, "b", seed=7, learning_rate=5e-4)
    page = _client(tmp_path).get("/compare?run=a&run=b").text
    metrics = _section(page, "Metrics")
    assert "<th>a</th><th>b</th>" in metrics
    rows = re.findall(r"<tr>(.*?)</tr>", metrics, re.S)
    tuned_f1 = next(r for r in rows if "finetuned</th>" in r and "<th>f1_macro</th>" in r)
    assert tuned_f1.count("<small>[") == 2  # both runs' 95% intervals
    assert tuned_f1.count("<strong>") >= 1
    # The primary metric is the first row of each system.
    first = [r for r in rows if "rowspan" in r]
    assert first and all("<th>f1_macro</th>" in r for r in first)
    evaluations = [RunDir(tmp_path / name).read_eval()["results"]["finetuned"]["f1_macro"] for name in "ab"]
    best = "a" if evaluations[0] >= evaluations[1] else "b"
    cells = re.findall(r'<td class="num">(.*?)</td>', tuned_f1, re.S)
    assert "<strong>" in cells["ab".index(best)]
    paired = _section(page, "Against a: paired differences")  # the same examples, other predictions
    assert "<th>b</th><td>finetuned</td><td>f1_macro</td>" in paired and "not paired" not in paired
    verdicts = _section(page, "Verdicts")
    assert "wins on f1_macro" in verdicts and 'href="/runs/a/report"' in verdicts and 'href="/runs/b"' in verdicts


def test_api_compare_returns_every_runs_curves(tmp_path):
    studio_run(tmp_path, "a", steps=60)
    studio_run(tmp_path, "b", steps=40)
    with RunDir(tmp_path / "b").metrics.open("a") as metrics:
        metrics.write('{"step": 45, "split": "train", "lo')  # a line being written
    payload = _client(tmp_path).get("/api/compare?run=a&run=b").json()
    runs = {r["name"]: r for r in payload["runs"]}
    assert list(runs) == ["a", "b"] and payload["live"] is False
    assert [s for s, _ in runs["a"]["train"]] == list(range(5, 61, 5))
    assert [s for s, _ in runs["a"]["validation"]] == [20, 40, 60]
    assert [s for s, _ in runs["b"]["train"]] == list(range(5, 41, 5))
    assert runs["a"]["train"][0][1] == 2.0 / 1.5 and runs["a"]["status"] == "finished"
    page = _client(tmp_path).get("/compare?run=a&run=b").text
    data = json.loads(re.search(r'id="page-data">(.*?)</script>', page).group(1))
    assert data["curves"] == payload and '<div id="compare-loss"></div>' in page


def test_a_running_run_makes_the_page_live(tmp_path):
    studio_run(tmp_path, "a")
    studio_run(tmp_path, "b", state="running")
    payload = _client(tmp_path).get("/api/compare?run=a&run=b").json()
    assert {r["name"]: r["status"] for r in payload["runs"]}["b"] == "running" and payload["live"] is True


def test_runs_evaluated_on_different_test_sets_are_warned_about(tmp_path):
    studio_run(tmp_path, "a", seed=42)
    studio_run(tmp_path, "same", seed=42, learning_rate=5e-4)
    studio_run(tmp_path, "other", seed=7)
    client = _client(tmp_path)
    assert "different test sets" not in client.get("/compare?run=a&run=same").text
    page = client.get("/compare?run=a&run=other").text
    assert '<p class="warning">These runs were evaluated on different test sets' in page


def test_picker_is_shown_with_fewer_than_two_runs(tmp_path):
    studio_run(tmp_path, "a")
    studio_run(tmp_path, "b")
    client = _client(tmp_path)
    for url in ("/compare", "/compare?run=a", "/compare?run=a&run=a"):
        page = client.get(url).text
        assert '<form id="compare-picker" method="get" action="/compare">' in page, url
        assert 'name="run" value="a"' in page and 'name="run" value="b"' in page
        assert "<h2>Metrics</h2>" not in page
    assert 'value="a" id="pick-a" checked' in client.get("/compare?run=a").text


def test_unknown_or_outside_runs_are_not_found_and_more_than_eight_are_refused(tmp_path):
    runs = tmp_path / "runs"
    studio_run(runs, "a")
    studio_run(tmp_path, "outside")
    client = _client(runs)
    for other in ("missing", "..", "../outside", "a/../../outside"):
        assert client.get("/compare", params=[("run", "a"), ("run", other)]).status_code == 404, other
        api = client.get("/api/compare", params=[("run", "a"), ("run", other)])
        assert api.status_code == 404 and "error" in api.json()
    names = [("run", f"r{i}") for i in range(9)]
    assert client.get("/compare", params=names).status_code == 400
    refused = client.get("/api/compare", params=names)
    assert refused.status_code == 400 and "at most 8" in refused.json()["error"]["message"]
    assert client.get("/api/compare?run=a").status_code == 400


def test_nasty_run_names_and_recipes_are_escaped(tmp_path):
    studio_run(tmp_path, "evil", nasty=True)
    studio_run(tmp_path, "plain")
    client = _client(tmp_path)
    for url in ("/compare?run=evil&run=plain", "/compare"):
        page = client.get(url).text
        assert "<script>alert" not in page and "<b>bold</b>" not in page, url
        assert "&lt;script&gt;alert" in page, url
