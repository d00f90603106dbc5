"""The Judge pages and API over a real tiny generation run, on a studio with a token and two annotators: blind
items, each annotator's answers their own, the owner's endpoints refused to annotators, results, exports, escaping,
and bad requests."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from judge_runs import copy_run, generation_run, set_prediction

from lmtune.guidance import annotators, db, judging
from lmtune.run_dir import RunDir
from lmtune.studio.app import Studio, create_app

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "owner-secret-token"
OWNER = {"Authorization": f"Bearer {TOKEN}", "X-Lmtune-Studio": "1"}
SCRIPT_IN, SCRIPT_OUT = "<script>alert('in')</script>", "<script>alert('out')</script></pre>"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("judge-api")
    run = generation_run(root, tiny_model_dir, prompt_suffix=" " + SCRIPT_IN)
    set_prediction(copy_run(run, "gen-xss"), "finetuned", 1, SCRIPT_OUT)  # what a model could write
    studio = Studio(root / "runs", token=TOKEN, hosts={"testserver"})
    with db.opened(db.path_in(studio.state_dir), annotators.SCHEMA) as conn:
        tokens = {name: annotators.create(conn, name) for name in ("alice", "bob")}
    return SimpleNamespace(client=TestClient(create_app(studio)), tokens=tokens, studio=studio, run=RunDir(run))


def _as(studio, name: str) -> dict[str, str]:
    return {"X-Lmtune-Annotator": studio.tokens[name], "X-Lmtune-Studio": "1"}


def _new_round(studio, run: str = "gen") -> str:
    reply = studio.client.post("/api/judge/rounds", json={"run": run, "system_a": "zero_shot",
                                                          "system_b": "finetuned"}, headers=OWNER)
    assert reply.status_code == 201, reply.text
    return reply.json()["name"]


def _answer(studio, who: str, name: str, index, choice, reason: str = ""):
    return studio.client.post(f"/api/judge/{name}/answer", json={"index": index, "choice": choice, "reason": reason},
                              headers=_as(studio, who))


def _page_data(text: str):
    return json.loads(text.split('id="page-data">')[1].split("</script>")[0])


def test_annotators_judge_blind(studio):
    name = _new_round(studio)
    rounds = studio.client.get("/api/judge/rounds", headers=_as(studio, "alice"))
    assert rounds.status_code == 200
    mine = next(r for r in rounds.json()["rounds"] if r["name"] == name)
    assert mine["done"] == 0 and mine["n_items"] >= 4 and "system_a" not in mine
    page = studio.client.get(f"/judge/{name}", headers=_as(studio, "alice"))
    nxt = studio.client.get(f"/api/judge/{name}/next", headers=_as(studio, "alice"))
    for text in (rounds.text, page.text, nxt.text, studio.client.get("/judge", headers=_as(studio, "alice")).text):
        assert "finetuned" not in text and "zero_shot" not in text
    assert _page_data(page.text)["item"] == nxt.json()["item"] and nxt.json()["item"]["index"] == 0
    owner = next(r for r in studio.client.get("/api/judge/rounds", headers=OWNER).json()["rounds"] if r["name"] == name)
    assert (owner["system_a"], owner["system_b"]) == ("zero_shot", "finetuned")


def test_each_annotator_reads_only_their_own_answers(studio):
    name = _new_round(studio)
    for index, choice in enumerate(["B", "A", "tie"]):
        reply = _answer(studio, "alice", name, index, choice, f"alice {index}")
        assert reply.status_code == 200 and reply.json()["item"]["index"] == index + 1
    assert reply.json()["progress"]["done"] == 3
    bob = studio.client.get(f"/api/judge/{name}/answers", headers=_as(studio, "bob")).json()
    assert bob == {"annotator": "bob", "answers": []}
    assert studio.client.get(f"/api/judge/{name}/next", headers=_as(studio, "bob")).json()["item"]["index"] == 0
    assert _answer(studio, "bob", name, 0, "A").status_code == 200
    alice = studio.client.get(f"/api/judge/{name}/answers", headers=_as(studio, "alice")).json()["answers"]
    assert [(a["index"], a["choice"], a["reason"]) for a in alice] == [(0, "B", "alice 0"), (1, "A", "alice 1"),
                                                                       (2, "tie", "alice 2")]
    bob = studio.client.get(f"/api/judge/{name}/answers", headers=_as(studio, "bob")).json()["answers"]
    assert [(a["index"], a["choice"]) for a in bob] == [(0, "A")] and "alice" not in json.dumps(bob)


def test_the_owners_endpoints_refuse_annotators(studio):
    name = _new_round(studio)
    alice = _as(studio, "alice")
    refused = [studio.client.get(f"/api/judge/{name}/results", headers=alice),
               studio.client.get(f"/api/judge/{name}/pairs", headers=alice),
               studio.client.post(f"/api/judge/{name}/report", headers=alice),
               studio.client.post("/api/judge/rounds", json={"run": "gen", "system_a": "zero_shot",
                                                             "system_b": "finetuned"}, headers=alice)]
    for reply in refused:
        assert reply.status_code == 403, reply.text
        assert reply.json()["error"]["message"].startswith("only the studio's owner")
    page = studio.client.get(f"/judge/{name}/results", headers=alice)
    assert page.status_code == 403 and "only the studio&#x27;s owner" in page.text
    assert studio.client.get("/api/runs", headers=alice).status_code == 401  # an annotator token opens judging only
    assert studio.client.get("/api/judge/rounds").status_code == 401
    owner_judging = studio.client.get(f"/api/judge/{name}/next", headers=OWNER)
    assert owner_judging.status_code == 401 and "annotator token" in owner_judging.json()["error"]["message"]


def test_results_pairs_and_the_run_page_for_the_owner(studio):
    name = _new_round(studio)
    choices = {"alice": ["A", "B", "tie", "B"], "bob": ["B", "B"]}
    for who, picks in choices.items():
        for index, choice in enumerate(picks):
            assert _answer(studio, who, name, index, choice).status_code == 200
    with db.opened(db.path_in(studio.studio.state_dir), judging.SCHEMA) as conn:
        flips = {r["idx"]: bool(r["flipped"]) for r in conn.execute("SELECT idx, flipped FROM judge_items "
                                                                     "WHERE round = ?", (name,))}
    winners = [judging.unblind(c, flips[i]) for picks in choices.values() for i, c in enumerate(picks)]
    found = studio.client.get(f"/api/judge/{name}/results", headers=OWNER).json()
    assert (found["wins_a"], found["wins_b"], found["ties"]) == tuple(winners.count(w) for w in ("a", "b", "tie"))
    assert found["annotators"]["bob"]["answers"] == 2 and found["items_judged"] == 4
    assert found["ci_low"] <= found["win_rate_b"] <= found["ci_high"]
    pairs = studio.client.get(f"/api/judge/{name}/pairs", headers=OWNER)
    assert pairs.headers["content-type"].startswith("application/x-ndjson")
    assert f'filename="{name}-pairs.jsonl"' in pairs.headers["content-disposition"]
    assert sorted(json.loads(line)["annotator"] for line in pairs.text.splitlines()) == ["alice"] * 3 + ["bob"] * 2
    entry = next(r for r in studio.run.read_human_eval()["rounds"] if r["round"] == name)
    assert entry["answers"] == 6  # written into the run after each answer
    page = studio.client.get(f"/judge/{name}/results", headers=OWNER)
    assert page.status_code == 200 and "win rate of finetuned over zero_shot" in page.text
    assert f'href="/api/judge/{name}/pairs"' in page.text
    run_page = studio.client.get("/runs/gen", headers=OWNER).text
    assert "Human evaluation: blind A/B judgements" in run_page and name in run_page
    assert studio.client.post(f"/api/judge/{name}/report", headers=OWNER).json()["ok"]
    assert "Human evaluation: blind A/B judgements" in studio.run.report.read_text()


def test_a_script_in_an_input_or_an_output_stays_text(studio):
    name = _new_round(studio, "gen-xss")
    page = studio.client.get(f"/judge/{name}", headers=_as(studio, "alice"))
    assert page.status_code == 200 and "<script>alert" not in page.text  # the page data escapes every "<"
    item = _page_data(page.text)["item"]
    assert item["input"].endswith(SCRIPT_IN) and SCRIPT_OUT in (item["A"], item["B"])
    _answer(studio, "alice", name, 0, "A", "<img src=x onerror=alert(1)>")
    for url in (f"/judge/{name}/results", "/runs/gen-xss", "/judge"):
        text = studio.client.get(url, headers=OWNER).text
        assert "<script>alert" not in text and "<img src=x" not in text


def test_bad_requests_get_one_clear_message(studio):
    name = _new_round(studio)
    alice = _as(studio, "alice")
    bad = studio.client.post(f"/api/judge/{name}/answer", content=b"{not json", headers=alice)
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "body: the request body is not JSON"
    for body, message in [({"index": 0, "choice": "C"}, "choice must be A, B or tie (the side as shown) or skip"),
                          ({"index": 999, "choice": "A"}, f"round '{name}' has no item 999"),
                          ({"choice": "A"}, "index must be a whole number")]:
        reply = studio.client.post(f"/api/judge/{name}/answer", json=body, headers=alice)
        assert reply.status_code == 400 and message in reply.json()["error"]["message"], reply.text
    missing = studio.client.get("/api/judge/nope/next", headers=alice)
    assert missing.status_code == 404 and missing.json() == {"error": {"message": "no judging round called 'nope'",
                                                                       "code": 404}}
    assert studio.client.get("/judge/nope", headers=alice).status_code == 404
    same = studio.client.post("/api/judge/rounds", json={"run": "gen", "system_a": "finetuned",
                                                         "system_b": "finetuned"}, headers=OWNER)
    assert same.status_code == 400 and "pick two different systems" in same.json()["error"]["message"]
    unknown = studio.client.post("/api/judge/rounds", json={"run": "gen", "system_a": "rag",
                                                            "system_b": "finetuned"}, headers=OWNER)
    assert unknown.status_code == 400 and "no predictions of system 'rag'" in unknown.json()["error"]["message"]
    assert studio.client.post("/api/judge/rounds", json={"run": "nope", "system_a": "a", "system_b": "b"},
                              headers=OWNER).status_code == 404
