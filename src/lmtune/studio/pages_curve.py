"""The Curve page: a learning curve of ``lmtune curve``, the metric against the number of training examples.

``GET /curves/<name>`` renders the page from the study's ``curve.json``: the statement (what doubling the data is
expected to add, and where the curve flattens), the chart ``curve.js`` draws (each point with its 95% interval
against n on a log axis, the fitted saturating power law solid over the data and dashed beyond it to 4 x the
largest n, the zero-shot line) and the table of points with links to their runs. While points are pending or
running the script polls ``GET /api/curves/<name>`` every three seconds; ``curve.json`` is rewritten after each
point, so the page follows the curve as it is measured.

The fitted curve is drawn from the fit's parameters: y(n) = a - b * n^-c when higher is better, a + b * n^-c
when lower is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lmtune.studio import layout, studies
from lmtune.studio.cache import Stamped
from lmtune.studio.studies import number, text, texts

router = APIRouter()

#: Point states in which the curve still changes (the page polls while one point is in one).
LIVE = ("pending", "running", "queued")
#: The fitted curve is drawn this far beyond the largest n measured (as ``curve.html`` draws it).
EXTRAPOLATE = 4
SAMPLES = 40

_VIEWS = Stamped(64)


def view(root, study: studies.Study) -> dict[str, Any]:
    """What the Curve page shows of ``study``, cached until ``curve.json`` changes."""
    return _VIEWS.get(str(study.path), [study.marker], lambda: _parse(root, study))


def row(root, study: studies.Study) -> dict[str, Any]:
    """The Studies page's row of ``study``."""
    found = view(root, study)
    done = [p for p in found["points"] if p["state"] == "finished" and p["value"] is not None]
    best = None
    if done:
        pick = max if found["higher_is_better"] is not False else min
        top = pick(done, key=lambda p: p["value"])
        best = f"{found['metric']} {top['value']:.4g} at n={top['n_train']}"
    return {"progress": f"{len(done)} of {found['total']} points", "best": best,
            "live": any(p["state"] == "running" for p in found["points"]),
            "updated": found["updated"], "note": found["note"]}


def _parse(root, study: studies.Study) -> dict[str, Any]:
    body, note = studies.read_json(study.marker)
    body = body or {}
    points = [_point(root, study.name, p) for p in body.get("points") or [] if isinstance(p, dict)]
    hib = body.get("higher_is_better")
    fit = body.get("fit") if isinstance(body.get("fit"), dict) else None
    fractions = body.get("fractions") if isinstance(body.get("fractions"), list) else []
    repeats = number(body.get("repeats"))
    planned = len(fractions) * int(repeats) if repeats else 0
    baseline = body.get("baseline") if isinstance(body.get("baseline"), dict) else None
    return {"name": study.name, "kind": "curve", "title": text(body.get("name"), 200) or study.name,
            "metric": text(body.get("metric"), 100) or "metric", "system": text(body.get("system"), 100),
            "higher_is_better": hib if isinstance(hib, bool) else None,
            "n_train_total": number(body.get("n_train_total")), "fractions": [number(f) for f in fractions],
            "repeats": repeats, "points": points, "total": max(len(points), planned),
            "baseline": _baseline(root, study.name, baseline) if baseline is not None else None,
            "notes": [n for n in texts(body.get("notes")) if n],
            "fit": _fit(fit) if fit is not None else None,
            "fit_line": fitted_line(fit, points, hib is not False) if fit is not None else None,
            "statement": text((fit or {}).get("statement")) or text(body.get("statement")),
            "live": any(p["state"] in LIVE for p in points) or not points,
            "updated": studies.updated(study.marker), "note": note}


def _point(root, study: str, point: dict[str, Any]) -> dict[str, Any]:
    return {"fraction": number(point.get("fraction")), "n_train": number(point.get("n_train")),
            "repeat": number(point.get("repeat")), "run": text(point.get("run"), 300),
            "link": studies.run_link(root, study, point.get("run")), "state": text(point.get("state"), 40) or "pending",
            "value": number(point.get("value")), "ci_low": number(point.get("ci_low")),
            "ci_high": number(point.get("ci_high")), "seconds": number(point.get("seconds"))}


def _baseline(root, study: str, baseline: dict[str, Any]) -> dict[str, Any]:
    return {"system": text(baseline.get("system"), 100) or "zero_shot", "value": number(baseline.get("value")),
            "ci_low": number(baseline.get("ci_low")), "ci_high": number(baseline.get("ci_high")),
            "seconds": number(baseline.get("seconds")), "run": text(baseline.get("run"), 300),
            "link": studies.run_link(root, study, baseline.get("run"))}


def _fit(fit: dict[str, Any]) -> dict[str, Any]:
    interval = fit.get("doubling_ci") if isinstance(fit.get("doubling_ci"), list) else []
    return {"form": text(fit.get("form"), 100), **{k: number(fit.get(k)) for k in ("a", "b", "c", "at_n")},
            "doubling_gain": number(fit.get("doubling_gain")),
            "doubling_ci": [number(v) for v in interval[:2]] if len(interval) >= 2 else None,
            "flattens_at": number(fit.get("flattens_at")), "flatten_threshold": number(fit.get("flatten_threshold")),
            "statement": text(fit.get("statement"))}


def curve_value(n: np.ndarray, a: float, b: float, c: float, higher_is_better: bool) -> np.ndarray:
    """The fitted saturating power law at ``n``: a - b * n^-c (a + b * n^-c when lower is better)."""
    step = b * np.power(n, -c)
    return a - step if higher_is_better else a + step


def fitted_line(fit: dict[str, Any], points: list[dict[str, Any]], higher_is_better: bool) -> dict[str, Any] | None:
    """The fitted curve as ``[n, y]`` pairs: ``solid`` over the n measured so far, ``dashed`` from the largest
    of them to :data:`EXTRAPOLATE` times it (None when the fit lacks a parameter or no point has a value)."""
    a, b, c = (number(fit.get(k)) for k in ("a", "b", "c"))
    sizes = [p["n_train"] for p in points if p["value"] is not None and p["n_train"] is not None and p["n_train"] > 0]
    if a is None or b is None or c is None or not sizes:
        return None
    low, high = min(sizes), max(sizes)
    inside = np.geomspace(low, high, SAMPLES) if high > low else np.array([float(low)])
    beyond = np.geomspace(high, EXTRAPOLATE * high, SAMPLES // 2)

    def pairs(n: np.ndarray) -> list[list[float]]:
        y = curve_value(n, a, b, c, higher_is_better)
        return [[float(x), float(v)] for x, v in zip(n, y) if np.isfinite(v)]

    return {"solid": pairs(inside), "dashed": pairs(beyond)}


def _view(request: Request, name: str) -> dict[str, Any]:
    root = request.app.state.studio.runs
    return view(root, studies.study_dir(root, name, "curve"))


@router.get("/api/curves/{name}")
def api_curve(request: Request, name: str) -> dict[str, Any]:
    return _view(request, name)


@router.get("/curves/{name}", response_class=HTMLResponse)
def curve_page(request: Request, name: str) -> str:
    found = _view(request, name)
    esc = layout.esc
    against = f" of {found['system']}" if found["system"] else ""
    body = (f'<h1>Learning curve: {esc(found["title"])}</h1>'
            f'<p class="meta"><code>{esc(name)}/curve.json</code>: {esc(found["metric"])}{esc(against)} on the test '
            'split against the number of training examples; updated while points are measured · '
            '<a href="/studies">all studies</a></p>'
            f'<p class="summary" id="curve-statement"{"" if found["statement"] else " hidden"}>'
            f'{esc(found["statement"] or "")}</p>'
            f'<p class="note" id="curve-note"{"" if found["note"] else " hidden"}>{esc(found["note"] or "")}</p>'
            '<div id="curve-notes"></div><div id="curve-chart"></div><p class="meta" id="curve-progress"></p>'
            '<h2>Points</h2><div class="wide"><table id="curve-points" class="runs"><thead><tr><th>n train</th>'
            '<th>fraction</th><th>repeat</th><th>state</th><th>value [95% CI]</th><th>seconds</th><th>run</th></tr>'
            '</thead><tbody></tbody></table></div>')
    return layout.page(f"curve {name}", body, "/studies", ("charts.js", "curve.js"), found)
