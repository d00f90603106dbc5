"""The studio's Runs page and API, and the guard on every request (host, token, cross-site writes)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from studio_runs import studio_run

from lmtune.studio.app import Studio, create_app


def _client(root, **options) -> TestClient:
    return TestClient(create_app(Studio(root, hosts={"testserver"}, **options)))


def test_runs_api_lists_each_run_with_its_result_and_status(tmp_path):
    studio_run(tmp_path, "a")
    studio_run(tmp_path, "b", state="failed")
    (tmp_path / "not-a-run").mkdir()
    rows = {r["name"]: r for r in _client(tmp_path).get("/api/runs").json()["runs"]}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["status"] == "finished" and rows["b"]["status"] == "failed"
    assert rows["a"]["metric"] == "f1_macro" and rows["a"]["system"] == "finetuned"
    assert rows["a"]["ci_low"] <= rows["a"]["value"] <= rows["a"]["ci_high"]
    assert rows["a"]["task"] == "classification" and rows["a"]["method"] == "lora"
    assert rows["a"]["duration_s"] == 640.0


def test_runs_page_escapes_run_names(tmp_path):
    studio_run(tmp_path, "evil", nasty=True)
    page = _client(tmp_path).get("/").text
    assert "<script>alert" not in page
    assert "\\u003cscript>alert" in page  # in the page's JSON data, where no "<" can close the script element


def test_unknown_host_wrong_token_and_cross_site_writes_are_refused(tmp_path):
    studio_run(tmp_path, "a")
    client = _client(tmp_path, token="s3cret")
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    signed = client.get("/?token=s3cret", follow_redirects=False)
    assert signed.status_code == 303 and "token" not in signed.headers["location"]
    assert client.get("/api/runs").status_code == 200  # the cookie set by the link
    assert client.get("/api/runs", headers={"Host": "evil.example"}).status_code == 400
    assert client.post("/api/runs/a/cancel").status_code == 403
    assert client.post("/api/runs/a/cancel", headers={"X-Lmtune-Studio": "1",
                                                      "Origin": "http://evil.example"}).status_code == 403


def test_a_run_name_outside_the_folder_is_not_found(tmp_path):
    runs = tmp_path / "runs"
    studio_run(runs, "a")
    studio_run(tmp_path, "outside")
    (runs / "link").symlink_to(tmp_path / "outside")
    client = _client(runs)
    for name in ("..%2Foutside", "..", "link", "%2e%2e", "a%2F..%2F..%2Foutside"):
        assert client.get(f"/runs/{name}/report").status_code == 404, name
    assert client.get("/runs/a/report").status_code == 200
    assert client.get("/static/..%2F..%2Fapp.py").status_code == 404
