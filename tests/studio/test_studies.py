"""The studio's study pages and their API: the Studies list, a tune search read from its live SQLite study
(read-only, while it changes, while a commit locks it), learning curves and active-learning experiments read from
their JSON files, the runs inside a study, and names that try to leave the runs folder."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time

import numpy as np
import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState
from studio_runs import studio_run
from studio_studies import A, B, C, active_json, add_trial, curve_json, open_study, tune_study

from lmtune.report.html import esc
from lmtune.studio import tune_study as tune_view
from lmtune.studio.app import Studio, create_app
from lmtune.tune import page

NASTY = '<script>alert("x")</script>'
WRITE = {"X-Lmtune-Studio": "1"}


def _client(root, **options) -> TestClient:
    return TestClient(create_app(Studio(root, hosts={"testserver"}, **options)))


def _data(html: str) -> dict:
    return json.loads(html.split('id="page-data">')[1].split("</script>")[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A runs folder with a search, a learning curve, an active-learning experiment and a plain run."""
    root = tmp_path_factory.mktemp("studies")
    tune_study(root)
    curve_json(root)
    active_json(root)
    studio_run(root, "plain")
    now = time.time()
    for age, marker in ((300, "lr-search/study.db"), (200, "lc/curve.json"), (100, "al/active.json")):
        os.utime(root / marker, (now - age, now - age))
    return root


def test_the_studies_page_lists_each_study_newest_first(folder):
    rows = _client(folder).get("/api/studies").json()["studies"]
    assert [(r["kind"], r["name"]) for r in rows] == [("active", "al"), ("curve", "lc"), ("tune", "lr-search")]
    by = {r["kind"]: r for r in rows}
    assert by["tune"]["progress"] == "4 trials: 3 complete, 1 pruned"
    assert by["tune"]["best"] == "f1_macro 0.74 (trial 1)"
    assert by["curve"]["progress"] == "3 of 4 points" and not by["curve"]["live"] and by["active"]["live"]
    assert by["curve"]["best"] == f"f1_macro {A - B * 200 ** -C:.4g} at n=200"
    assert by["active"]["progress"] == "4 of 6 rounds" and by["active"]["best"] == "f1_macro 0.58 (random, 40 labels)"
    assert [r["url"] for r in rows] == ["/active/al", "/curves/lc", "/tune/lr-search"]
    html = _client(folder).get("/studies").text
    assert '<a href="/studies" class=active>Studies</a>' in html and 'src="/static/studies.js' in html
    assert [r["name"] for r in _data(html)["studies"]] == ["al", "lc", "lr-search"]


def test_the_tune_api_reads_the_study_as_tune_html_does(folder):
    body = _client(folder).get("/api/tune/lr-search").json()
    assert [t["number"] for t in body["trials"]] == [1, 3, 0, 2]  # complete by objective, then pruned
    assert [t["state"] for t in body["trials"]] == ["complete"] * 3 + ["pruned"]
    first = body["trials"][0]
    assert first["value"] == 0.74 and first["params"] == {"training.learning_rate": 1e-3, "method.peft.r": 16}
    assert first["seconds"] == 31.0 and first["val_loss"] == pytest.approx(1.1)
    assert first["run"] == "lr-search~trial-1" and body["trials"][3]["reason"].startswith("pruned at step 4")
    assert body["best"]["number"] == 1 and body["metric"] == "f1_macro" and body["system"] == "finetuned"
    assert [d["short"] for d in body["dims"]] == ["learning_rate", "r"]
    assert body["dims"][0]["log"] and body["dims"][1]["choices"] == [8, 16, 32]
    assert body["summary"].endswith("4 trials: 3 complete, 1 pruned, 0 failed. Best: trial 1, f1_macro 0.74.")
    study = optuna.load_study(study_name="lmtune", storage=f"sqlite:///{folder / 'lr-search' / 'study.db'}")
    expected, _ = page.importances(study, tune_view.dimensions(study.trials), seed=42)  # the trials' recipe seed
    assert {i["key"]: i["importance"] for i in body["importances"]} == pytest.approx(expected)
    html = _client(folder).get("/tune/lr-search").text
    assert 'id="leaderboard"' in html and 'id="parallel"' in html and 'src="/static/charts.js' in html
    assert _data(html)["trials"] == body["trials"]


def test_a_trial_opens_on_the_run_page_and_is_never_resumed_from_the_studio(folder):
    client = _client(folder)
    page = client.get("/runs/lr-search~trial-2")
    assert page.status_code == 200 and 'id="run-resume"' not in page.text and "part of the study" in page.text
    assert client.get("/api/runs/lr-search~trial-1/curves").json()["status"] == "finished"
    assert client.get("/runs/lc~points~n40-r0").status_code == 200
    assert client.get("/runs/al~entropy-s0~round-1/report").status_code == 200
    refused = client.post("/api/runs/lr-search~trial-2/resume", headers=WRITE)
    assert refused.status_code == 409 and "run of a study" in refused.json()["error"]["message"]
    assert client.post("/api/runs/al~entropy-s0~round-1/cancel", headers=WRITE).status_code == 409
    assert "lr-search~trial-1" not in [r["name"] for r in client.get("/api/runs").json()["runs"]]


def _digest(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_running_search_is_read_without_writing_and_its_new_trials_appear(tmp_path):
    directory = tune_study(tmp_path, trials=[])
    client = _client(tmp_path)
    before = _digest(directory)
    assert client.get("/api/tune/lr-search").json()["trials"] == []
    study = open_study(directory)
    running = study.ask()  # a trial in progress, as while a search trains it
    running.suggest_float("training.learning_rate", 1e-5, 1e-2, log=True)
    running.set_user_attr("run_dir", "trial-0")
    body = client.get("/api/tune/lr-search").json()
    assert [t["state"] for t in body["trials"]] == ["running"] and body["live"] and body["best"] is None
    assert body["importances"] is None and "at least two complete trials" in body["importances_note"]
    study.tell(running, 0.5)
    add_trial(study, directory, 1e-3, 16, TrialState.COMPLETE, 0.8, runs=False)
    body = client.get("/api/tune/lr-search").json()
    found = [(t["number"], t["state"], t["value"]) for t in body["trials"]]
    assert found == [(1, "complete", 0.8), (0, "complete", 0.5)]
    after = _digest(directory)
    for _ in range(3):
        client.get("/api/tune/lr-search")
        client.get("/tune/lr-search")
    assert _digest(directory) == after != before  # the search wrote; the studio did not
    assert sorted(p.name for p in directory.iterdir()) == ["study.db"]  # no journal or lock file left by a read


def test_a_study_locked_by_a_commit_serves_the_last_read_with_a_note(tmp_path):
    directory = tune_study(tmp_path, trials=[])
    study = open_study(directory)
    add_trial(study, directory, 1e-3, 16, TrialState.COMPLETE, 0.8, runs=False)
    client = _client(tmp_path)
    assert len(client.get("/api/tune/lr-search").json()["trials"]) == 1
    add_trial(study, directory, 1e-4, 8, TrialState.COMPLETE, 0.6, runs=False)
    lock = sqlite3.connect(directory / "study.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # what a search holds for the moment of a commit
    try:
        started = time.monotonic()
        body = client.get("/api/tune/lr-search").json()
        assert time.monotonic() - started < 5
        assert len(body["trials"]) == 1 and "cannot be read just now" in body["note"]
        assert "locked" in body["note"]
        assert "cannot be read" in client.get("/tune/lr-search").text
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    body = client.get("/api/tune/lr-search").json()
    assert len(body["trials"]) == 2 and body["note"] is None


def test_a_study_not_created_yet_is_shown_empty_with_a_note(tmp_path):
    (tmp_path / "new-search").mkdir()
    (tmp_path / "new-search" / "study.db").write_bytes(b"")
    body = _client(tmp_path).get("/api/tune/new-search").json()
    assert body["trials"] == [] and "cannot be read yet" in body["note"]
    assert (tmp_path / "new-search" / "study.db").read_bytes() == b""


def test_the_curve_api_gives_the_points_the_fitted_curve_and_the_baseline(folder):
    body = _client(folder).get("/api/curves/lc").json()
    assert [p["n_train"] for p in body["points"]] == [40, 100, 200, 400] and body["total"] == 4
    assert [p["link"] for p in body["points"]] == ["lc~points~n40-r0", "lc~points~n100-r0", "lc~points~n200-r0",
                                                   None]  # the pending point has no run yet
    assert body["live"] and body["baseline"]["value"] == 0.35 and body["fit"]["doubling_ci"] == [0.01, 0.04]
    assert body["baseline"]["link"] == "lc~points~zero-shot" and body["notes"][0].startswith("the smallest size")
    solid, dashed = (np.array(body["fit_line"][k]) for k in ("solid", "dashed"))
    assert solid[0, 0] == 40 and solid[-1, 0] == pytest.approx(200) and dashed[-1, 0] == pytest.approx(800)
    assert np.allclose(solid[:, 1], A - B * solid[:, 0] ** -C) and np.allclose(dashed[:, 1], A - B * dashed[:, 0] ** -C)
    html = _client(folder).get("/curves/lc").text
    assert "Doubling the 400 training examples is expected to add 0.02 f1_macro" in html
    assert 'id="curve-chart"' in html and 'src="/static/curve.js' in html


def test_a_lower_is_better_curve_is_fitted_upwards_and_a_finished_one_is_not_live(tmp_path):
    directory = curve_json(tmp_path, runs=False)
    body = json.loads((directory / "curve.json").read_text())
    body["higher_is_better"] = False
    for point in body["points"]:
        point.update(state="finished", value=0.5)
    (directory / "curve.json").write_text(json.dumps(body))
    found = _client(tmp_path).get("/api/curves/lc").json()
    solid = np.array(found["fit_line"]["solid"])
    assert np.allclose(solid[:, 1], A + B * solid[:, 0] ** -C) and not found["live"]


def test_the_active_api_gives_each_strategy_curve_and_every_round(folder):
    body = _client(folder).get("/api/active/al").json()
    assert set(body["curves"]) == {"entropy", "random"} and body["labels_to_reach"] == {"entropy": 40, "random": 40}
    assert [len(a["rounds"]) for a in body["arms"]] == [3, 3] and body["total"] == 6 and body["live"]
    entropy = body["arms"][0]["rounds"]
    assert [r["link"] for r in entropy] == ["al~entropy-s0~round-0", "al~entropy-s0~round-1", None]
    assert [r["n_labelled"] for r in entropy] == [20, 40, 60]
    assert body["target"] == {"strategy": "random", "value": 0.55}
    html = _client(folder).get("/active/al").text
    assert "entropy reached random&#x27;s final f1_macro with 40 labels" in html and 'id="active-chart"' in html


def test_study_files_are_escaped_and_their_links_stay_inside(tmp_path):
    directory = curve_json(tmp_path, statement=NASTY, runs=False)
    studio_run(tmp_path, "outside")
    body = json.loads((directory / "curve.json").read_text())
    body["name"] = NASTY
    body["points"][0].update(run="../../outside", state=NASTY)
    body["points"][1]["run"] = "/etc"
    (directory / "curve.json").write_text(json.dumps(body))
    html = _client(tmp_path).get("/curves/lc").text
    assert "<script>alert" not in html and esc(NASTY) in html and "\\u003cscript>alert" in html
    found = _client(tmp_path).get("/api/curves/lc").json()
    assert [p["link"] for p in found["points"][:2]] == [None, None]


def test_a_torn_study_file_leaves_the_page_empty_with_a_note(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "curve.json").write_text('{"points": [')
    body = _client(tmp_path).get("/api/curves/half").json()
    assert body["points"] == [] and "not JSON" in body["note"] and body["live"]
    assert _client(tmp_path).get("/curves/half").status_code == 200


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A runs folder with one study of each kind, a plain run, and a symlink to studies outside the folder."""
    root = tmp_path_factory.mktemp("hostile")
    runs = root / "runs"
    tune_study(runs, trials=[])
    curve_json(runs, runs=False)
    active_json(runs, runs=False)
    studio_run(runs, "plain")
    tune_study(root, "outside", trials=[])
    curve_json(root, "outside", runs=False)
    active_json(root, "outside", runs=False)
    (runs / "link").symlink_to(root / "outside")
    return runs


@pytest.mark.parametrize("path", ["/tune/{}", "/api/tune/{}", "/curves/{}", "/api/curves/{}", "/active/{}",
                                  "/api/active/{}"])
def test_hostile_study_names_are_not_found(hostile, path):
    client = _client(hostile)
    for name in ("..%2Foutside", "%2e%2e", "link", "plain", "lr-search~trial-0", "al~..", ".hidden",
                 "lr-search%2F..%2F..%2Foutside", "missing", "x" * 300):
        response = client.get(path.format(name))
        assert response.status_code == 404, name
    kinds = {"/tune/{}": "lr-search", "/curves/{}": "lc", "/active/{}": "al"}
    for page_path, name in kinds.items():  # each study on its own kind's page only
        for other_path in kinds:
            assert (client.get(other_path.format(name)).status_code == 200) == (other_path == page_path)


def test_hostile_nested_run_names_are_not_found(tmp_path):
    runs = tmp_path / "runs"
    study = tune_study(runs, trials=[])
    studio_run(study, "trial-0")
    studio_run(tmp_path, "outside")
    (study / "trial-9").symlink_to(tmp_path / "outside")
    client = _client(runs)
    for name in ("lr-search~..~..~outside", "lr-search~trial-9", "~trial-0", "lr-search~", "lr-search~~trial-0",
                 "lr-search~trial-0~..", "..~outside", "lr-search~.~trial-0", "a~b~c~d", "lr-search~trial-0%2F.."):
        assert client.get(f"/runs/{name}").status_code == 404, name
        assert client.get(f"/api/runs/{name}/curves").status_code == 404, name
    assert client.get("/runs/lr-search~trial-0").status_code == 200


def test_study_pages_need_the_token_like_every_page(folder):
    client = _client(folder, token="s3cret")
    assert client.get("/api/studies").status_code == 401
    assert client.get("/api/tune/lr-search").status_code == 401
    assert client.get("/api/curves/lc", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/active/al", headers={"Host": "evil.example",
                                                  "Authorization": "Bearer s3cret"}).status_code == 400
