"""The New-run page: a recipe's problems come back with their key paths and nothing is queued; a good recipe is
queued under a free name with its data paths absolute; recipe files are read from the recipes folder only.

The queue here is never started, so what it queues stays queued: these tests need no worker and no model.
"""

from __future__ import annotations

import pytest
import yaml
from conftest import write_recipe
from fastapi.testclient import TestClient
from studio_runs import studio_run

from lmtune.studio import recipes
from lmtune.studio.app import Studio, create_app
from lmtune.studio.queue import RunQueue

WRITE = {"X-Lmtune-Studio": "1"}


def _client(runs, recipes=None, queue: bool = True, headers=WRITE) -> TestClient:
    studio = Studio(runs, recipes=recipes, hosts={"testserver"})
    if queue:
        studio.queue = RunQueue(studio.state_dir, runs)
    return TestClient(create_app(studio), headers=headers)


def _recipe(tmp_path, tiny_model_dir, sentiment_file, **sections) -> dict:
    path = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, sentiment_file, **sections)
    return yaml.safe_load(path.read_text())


def _problems(response) -> dict[str, str]:
    assert response.status_code == 400, response.text
    return {p["key"]: p["message"] for p in response.json()["problems"]}


def test_every_problem_comes_back_with_its_key_path_and_nothing_is_queued(tmp_path, tiny_model_dir, sentiment_file):
    client = _client(tmp_path / "runs")
    recipe = _recipe(tmp_path, tiny_model_dir, sentiment_file)
    recipe["training"]["learnig_rate"] = 1e-3
    recipe["training"]["max_steps"] = "many"
    recipe["data"]["train"] = "missing/reviews.jsonl"
    text = yaml.safe_dump(recipe)
    for url in ("/api/validate", "/api/runs"):
        problems = _problems(client.post(url, json={"text": text}))
        assert "did you mean 'learning_rate'" in problems["training.learnig_rate"]
        assert "valid integer" in problems["training.max_steps"] and "'many'" in problems["training.max_steps"]
        assert "no such file" in problems["data.train"] and "missing/reviews.jsonl" in problems["data.train"]

    problems = _problems(client.post("/api/runs", json={"text": "name: x\nmodel: [unclosed\ntask: {}\n"}))
    assert list(problems) == ["line 3"] and "not valid YAML" in problems["line 3"]
    recipe = _recipe(tmp_path, tiny_model_dir, sentiment_file)
    recipe["data"]["train"] = str(tmp_path / "gone.jsonl")
    assert list(_problems(client.post("/api/runs", json={"text": yaml.safe_dump(recipe)}))) == ["data.train"]
    assert list(_problems(client.post("/api/runs", json={"text": "- a list"}))) == ["recipe"]
    assert client.post("/api/runs", json={"recipe": "no text"}).status_code == 400
    assert client.get("/api/queue").json() == {"jobs": []}
    assert client.get("/api/runs").json() == {"runs": []}


def test_a_valid_recipe_is_queued_under_a_free_name_with_absolute_data_paths(tmp_path, tiny_model_dir, sentiment_file,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # data paths relative to the studio's working directory, as lmtune train reads them
    runs = tmp_path / "runs"
    studio_run(runs, "tiny")  # the recipe's name is taken by a run of the folder
    client = _client(runs)
    text = yaml.safe_dump(_recipe(tmp_path, tiny_model_dir, sentiment_file, data={"train": sentiment_file.name}))
    assert client.post("/api/validate", json={"text": text}).json() == {"ok": True, "name": "tiny-2"}
    started = client.post("/api/runs", json={"text": text, "source": "recipe.yaml"})
    assert started.status_code == 201 and started.json() == {"name": "tiny-2", "url": "/runs/tiny-2"}
    assert client.post("/api/runs", json={"text": text}).json()["name"] == "tiny-3"  # tiny-2 is queued

    job = client.app.state.studio.queue.store.jobs()[-1]
    assert job["recipe"]["data"]["train"] == str(sentiment_file) and job["recipe"]["name"] == "tiny-2"
    assert job["run_dir"] == str((runs / "tiny-2").resolve()) and job["status"] == "queued"
    assert job["model"] == str(tiny_model_dir) and job["method"] == {"type": "recipe"}
    queue = client.get("/api/queue").json()["jobs"]
    assert [(j["name"], j["status"], j["source"]) for j in queue] == [("tiny-3", "queued", None),
                                                                       ("tiny-2", "queued", "recipe.yaml")]
    rows = client.get("/api/runs").json()["runs"]
    assert [(r["name"], r["status"], r["task"]) for r in rows[:2]] == [("tiny-3", "queued", "classification"),
                                                                        ("tiny-2", "queued", "classification")]
    assert client.post("/api/runs/tiny-3/cancel").json() == {"name": "tiny-3", "status": "cancelled"}
    assert [r["name"] for r in client.get("/api/runs").json()["runs"]] == ["tiny-2", "tiny"]


def test_recipe_files_are_read_from_the_recipes_folder_only(tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "b.yml").write_text("name: b\n")
    (folder / "a <x>.yaml").write_text("name: a\n")
    (folder / "notes.txt").write_text("not a recipe")
    (folder / ".hidden.yaml").write_text("name: hidden\n")
    (tmp_path / "secret.yaml").write_text("password: hunter2\n")
    (folder / "out.yaml").symlink_to(tmp_path / "secret.yaml")
    client = _client(tmp_path / "runs", recipes=folder)
    assert client.get("/api/recipes").json() == {"folder": str(folder), "recipes": ["a <x>.yaml", "b.yml"]}
    assert client.get("/api/recipes/b.yml").json() == {"name": "b.yml", "text": "name: b\n"}
    assert client.get("/api/recipes/a%20%3Cx%3E.yaml").json()["text"] == "name: a\n"
    for name in ("..%2Fsecret.yaml", "%2E%2E%2Fsecret.yaml", "%2Fetc%2Fpasswd", "out.yaml", ".hidden.yaml",
                 "notes.txt", "nope.yaml", "..", "%00.yaml"):
        response = client.get(f"/api/recipes/{name}")
        assert response.status_code == 404 and "hunter2" not in response.text, name
    for name in ("../secret.yaml", str(tmp_path / "secret.yaml"), "out.yaml", "sub/../b.yml"):
        with pytest.raises(recipes.RecipeNotFound):
            recipes.read(folder, name)
    page = client.get("/new").text
    assert '<select id="recipe-file">' in page and '<option value="a &lt;x&gt;.yaml">' in page
    assert "<x>" not in page

    bare = _client(tmp_path / "runs")
    assert bare.get("/api/recipes").json() == {"folder": None, "recipes": []}
    assert bare.get("/api/recipes/b.yml").status_code == 404
    assert "lmtune studio --recipes DIR" in bare.get("/new").text


def test_the_page_starts_from_a_runs_recipe_and_escapes_it(tmp_path):
    runs = tmp_path / "runs"
    run = studio_run(runs, "a")
    (run / "recipe.yaml").write_text("name: a\nnote: </textarea><script>alert(1)</script>\n")
    page = _client(runs).get("/new?from=a")
    assert page.status_code == 200 and '<textarea id="recipe-text"' in page.text and '<ul id="problems"' in page.text
    assert "<script>alert" not in page.text and "&lt;/textarea&gt;&lt;script&gt;" in page.text
    assert _client(runs).get("/new?from=..%2Fa").status_code == 404


def test_a_post_without_the_studio_header_is_refused(tmp_path):
    client = _client(tmp_path / "runs", headers={})
    assert client.post("/api/validate", json={"text": "name: x"}).status_code == 403
    assert client.post("/api/runs", json={"text": "name: x"}).status_code == 403
