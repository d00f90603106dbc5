"""The Active page: an active-learning experiment of ``lmtune active --oracle``, strategy against strategy.

``GET /active/<name>`` renders the page from the study's ``active.json``: the statement (how many labels each
strategy needs to reach what random selection reaches in the end), a chart ``active.js`` draws with one line per
strategy (the mean over seeds at each number of labels, its 95% interval shaded) and the target line, the labels
each strategy needed, and the table of every arm's rounds with links to their runs. While a round is pending or
running the script polls ``GET /api/active/<name>`` every three seconds.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lmtune.studio import layout, studies
from lmtune.studio.cache import Stamped
from lmtune.studio.studies import number, text, texts

router = APIRouter()

#: Round states in which the experiment still changes (the page polls while a round is in one).
LIVE = ("pending", "running", "queued")

_VIEWS = Stamped(64)


def view(root, study: studies.Study) -> dict[str, Any]:
    """What the Active page shows of ``study``, cached until ``active.json`` changes."""
    return _VIEWS.get(str(study.path), [study.marker], lambda: _parse(root, study))


def row(root, study: studies.Study) -> dict[str, Any]:
    """The Studies page's row of ``study``: rounds finished, and the best mean any strategy reached."""
    found = view(root, study)
    rounds = [r for arm in found["arms"] for r in arm["rounds"]]
    done = sum(r["state"] == "finished" for r in rounds)
    means = [(p["mean"], strategy, p["n_labelled"]) for strategy, curve in found["curves"].items() for p in curve
             if p["mean"] is not None]
    best = None
    if means:
        pick = max if found["higher_is_better"] is not False else min
        mean, strategy, n = pick(means, key=lambda m: m[0])
        best = f"{found['metric']} {mean:.4g} ({strategy}, {n} labels)"
    return {"progress": f"{done} of {found['total']} rounds", "best": best,
            "live": any(r["state"] == "running" for r in rounds),
            "updated": found["updated"], "note": found["note"]}


def _parse(root, study: studies.Study) -> dict[str, Any]:
    body, note = studies.read_json(study.marker)
    body = body or {}
    arms = [_arm(root, study.name, a) for a in body.get("arms") or [] if isinstance(a, dict)]
    strategies, seeds = texts(body.get("strategies")), texts(body.get("seeds"))
    rounds = number(body.get("rounds"))
    listed = sum(len(a["rounds"]) for a in arms)
    planned = len(strategies) * len(seeds) * int(rounds) if rounds else 0
    curves = body.get("curves") if isinstance(body.get("curves"), dict) else {}
    reach = body.get("labels_to_reach") if isinstance(body.get("labels_to_reach"), dict) else {}
    target = body.get("target") if isinstance(body.get("target"), dict) else None
    hib = body.get("higher_is_better")
    return {"name": study.name, "kind": "active", "title": text(body.get("name"), 200) or study.name,
            "metric": text(body.get("metric"), 100) or "metric", "higher_is_better": hib if isinstance(hib, bool)
            else None, "strategies": strategies, "seeds": seeds, "budget": number(body.get("budget")),
            "initial": number(body.get("initial")), "rounds": rounds, "start": text(body.get("start"), 100),
            "pool_size": number(body.get("pool_size")), "arms": arms, "total": max(listed, planned),
            "curves": {text(s, 200): _curve(c) for s, c in curves.items()},
            "labels_to_reach": {text(s, 200): number(n) for s, n in reach.items()},
            "target": {"strategy": text(target.get("strategy"), 200), "value": number(target.get("value"))}
            if target is not None else None,
            "statement": text(body.get("statement")),
            "live": any(r["state"] in LIVE for a in arms for r in a["rounds"]) or not arms,
            "updated": studies.updated(study.marker), "note": note}


def _arm(root, study: str, arm: dict[str, Any]) -> dict[str, Any]:
    rounds = [r for r in arm.get("rounds") or [] if isinstance(r, dict)]
    return {"strategy": text(arm.get("strategy"), 200), "seed": text(arm.get("seed"), 200),
            "rounds": [{"round": number(r.get("round")), "n_labelled": number(r.get("n_labelled")),
                        "value": number(r.get("value")), "ci_low": number(r.get("ci_low")),
                        "ci_high": number(r.get("ci_high")), "run": text(r.get("run"), 300),
                        "link": studies.run_link(root, study, r.get("run")),
                        "state": text(r.get("state"), 40) or "pending", "seconds": number(r.get("seconds")),
                        "selected_score_mean": number(r.get("selected_score_mean"))} for r in rounds]}


def _curve(points: Any) -> list[dict[str, Any]]:
    if not isinstance(points, list):
        return []
    return [{"n_labelled": number(p.get("n_labelled")), "mean": number(p.get("mean")),
             "ci_low": number(p.get("ci_low")), "ci_high": number(p.get("ci_high")), "seeds": number(p.get("seeds"))}
            for p in points if isinstance(p, dict)]


def _view(request: Request, name: str) -> dict[str, Any]:
    root = request.app.state.studio.runs
    return view(root, studies.study_dir(root, name, "active"))


@router.get("/api/active/{name}")
def api_active(request: Request, name: str) -> dict[str, Any]:
    return _view(request, name)


@router.get("/active/{name}", response_class=HTMLResponse)
def active_page(request: Request, name: str) -> str:
    found = _view(request, name)
    esc = layout.esc
    facts = [f"{found['metric']} on the fixed test file",
             *([f"budget {found['budget']} per round"] if found["budget"] is not None else []),
             *([f"{found['initial']} labelled at random first"] if found["initial"] is not None else []),
             *([f"pool of {found['pool_size']}"] if found["pool_size"] is not None else []),
             *([f"each round trained from {found['start']}"] if found["start"] else [])]
    body = (f'<h1>Active learning: {esc(found["title"])}</h1>'
            f'<p class="meta"><code>{esc(name)}/active.json</code>: {esc("; ".join(facts))} · '
            '<a href="/studies">all studies</a></p>'
            f'<p class="summary" id="active-statement"{"" if found["statement"] else " hidden"}>'
            f'{esc(found["statement"] or "")}</p>'
            f'<p class="note" id="active-note"{"" if found["note"] else " hidden"}>{esc(found["note"] or "")}</p>'
            '<div id="active-chart"></div><ul id="active-reach"></ul>'
            '<h2>Arms</h2><p class="meta">one arm per strategy and seed; round 0 is the random initial set</p>'
            '<div class="wide"><table id="active-arms" class="runs"><thead><tr><th>strategy</th><th>seed</th>'
            '<th>round</th><th>labelled</th><th>state</th><th>value [95% CI]</th><th>mean selection score</th>'
            '<th>seconds</th><th>run</th></tr></thead><tbody></tbody></table></div>')
    return layout.page(f"active {name}", body, "/studies", ("charts.js", "active.js"), found)
