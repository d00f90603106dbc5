"""The Judge pages' HTML: the rounds and the new-round form, the blind judging view, the results.

Every name and text from a run or an annotator goes through :func:`~lmtune.studio.layout.esc`; the judging view
is empty containers that ``judge.js`` fills with ``textContent`` from the page data and the API. The judging view
never holds a system's name: only the results page (the owner's) does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from lmtune.report import html
from lmtune.studio.layout import esc

KEYS = ("keys: <kbd>A</kbd> or <kbd>1</kbd> · <kbd>B</kbd> or <kbd>2</kbd> · <kbd>T</kbd> or <kbd>0</kbd> (tie) · "
        "<kbd>S</kbd> (skip: cannot tell)")


def link(name: str, suffix: str = "") -> str:
    """``/judge/<round><suffix>``, the round's name quoted for a URL and escaped for an attribute."""
    return esc(f"/judge/{quote(name, safe='')}{suffix}")


def rounds_table(rounds: list[dict[str, Any]], owner: bool) -> str:
    """One row per round: its run, the asker's progress, and (owner) the systems, answers and results link."""
    if not rounds:
        return '<p class="meta" id="no-rounds">No rounds yet.</p>'
    head = ["round", "run", "your progress"] + (["system A", "system B", "answers", "results"] if owner else [])
    rows = []
    for r in rounds:
        row = [f'<th><a href="{link(r["name"])}">{esc(r["name"])}</a></th>', f"<td>{esc(r['run'])}</td>",
               f'<td class="num">{r["done"]} of {r["n_items"]}</td>']
        if owner:
            row += [f"<td>{esc(r['system_a'])}</td>", f"<td>{esc(r['system_b'])}</td>",
                    f'<td class="num">{r["answers"]}</td>',
                    f'<td><a href="{link(r["name"], "/results")}">results</a></td>']
        rows.append(row)
    return f'<div id="rounds">{html.table(head, rows, "rounds")}</div>'


def new_round_form(runs: list[dict[str, Any]]) -> str:
    """The owner's form: a free-text run and two of its systems (judge.js fills the system lists per run)."""
    if not runs:
        return ('<section id="new-round"><h2>New round</h2><p class="meta">No run here has free-text answers with two '
                "systems' predictions (a generation, chat or reward run that has evaluated).</p></section>")
    options = "".join(f'<option value="{esc(r["name"])}">{esc(r["name"])}</option>' for r in runs)
    return ('<section id="new-round"><h2>New round</h2><form id="round-form" class="toolbar">'
            f'<label>Run <select id="round-run" required>{options}</select></label>'
            '<label>System A <select id="round-a" required></select></label>'
            '<label>System B <select id="round-b" required></select></label>'
            '<button type="submit" class="primary">Create round</button>'
            '<span id="round-message" class="warning" hidden></span></form>'
            '<p class="meta">Outputs that read the same for both systems are left out; the annotators see each '
            "input's two outputs as A and B, in an order drawn per item, never the systems' names.</p></section>")


def judging_view(name: str) -> str:
    """The blind judging view: progress, input, reference, the two outputs, the reason field and the buttons."""
    return (f'<h1>Judge <small>{esc(name)}</small></h1>'
            f'<p class="meta"><span id="judge-progress"></span> · {KEYS}</p>'
            '<p class="warning" id="judge-error" hidden></p>'
            '<section id="judge-item"><h2>Input</h2><pre id="judge-input"></pre>'
            '<details id="judge-reference-box"><summary>Reference answer (from the data)</summary>'
            '<pre id="judge-reference"></pre></details>'
            '<div class="judge-sides"><div class="judge-side"><h3>A</h3><pre id="judge-a"></pre></div>'
            '<div class="judge-side"><h3>B</h3><pre id="judge-b"></pre></div></div>'
            '<label class="judge-reason">Reason (optional) <input type="text" id="judge-reason" maxlength="2000" '
            'placeholder="why; typing here does not answer"></label>'
            '<div class="toolbar"><button type="button" data-choice="A">A is better</button>'
            '<button type="button" data-choice="tie">Tie</button>'
            '<button type="button" data-choice="B">B is better</button>'
            '<button type="button" data-choice="skip">Skip</button></div></section>'
            '<p id="judge-done" class="summary" hidden>You have judged every item of this round. Thank you!</p>')


def results_view(found: dict[str, Any]) -> str:
    """The owner's results: wins per system, B's win rate with its interval, each annotator's counts, exports."""
    a, b = found["system_a"], found["system_b"]
    interval = [found.get("ci_low"), found.get("ci_high")]
    rows = [[f"<th>{esc(a)} (system A) preferred</th>", html.cell(found["wins_a"])],
            [f"<th>{esc(b)} (system B) preferred</th>", html.cell(found["wins_b"])],
            ["<th>ties</th>", html.cell(found["ties"])],
            ["<th>skipped (cannot tell; in no count)</th>", html.cell(found.get("skipped", 0))],
            [f"<th>win rate of {esc(b)} over {esc(a)} (ties half)</th>", html.with_interval(found["win_rate_b"],
                                                                                             interval)],
            ["<th>p (win rate 0.5)</th>", html.cell(found.get("p_value"))]]
    people = [[f"<th>{esc(who)}</th>", html.cell(c["answers"]), html.cell(c["wins_a"]), html.cell(c["wins_b"]),
               html.cell(c["ties"]), html.cell(c.get("skipped", 0)), html.cell(c["win_rate_b"])]
              for who, c in found["annotators"].items()]
    name = found["round"]
    facts = (f"run {esc(found['run'])} · {found['n_items']} items ({found['n_identical']} left out: both outputs "
             f"the same) · {found['items_judged']} judged · {found['answers']} answers")
    return (f'<h1>Results <small>{esc(name)}</small></h1><p class="meta">{facts}</p>'
            f'<section id="results"><h2>{esc(b)} against {esc(a)}</h2>'
            + html.table(["", "value"], rows, "results")
            + f'<p class="meta">95% interval: {esc(found["interval"])}.</p></section>'
            '<section id="annotators"><h2>Annotators</h2>'
            + html.table(["annotator", "answers", f"{a} preferred", f"{b} preferred", "ties", "skipped",
                          f"{b}'s win rate"],
                         people, "annotators")
            + '</section><section id="exports"><h2>Exports</h2><div class="toolbar">'
            f'<a id="pairs-link" href="{esc("/api/judge/" + quote(name, safe="") + "/pairs")}" download>'
            "Preference pairs (JSONL: prompt, chosen, rejected; ties and skips left out)</a>"
            '<button type="button" id="update-report">Update the run\'s report.html</button>'
            '<span id="report-message" class="meta" hidden></span></div>'
            f'<p class="meta">The run\'s <code>human_eval.json</code> is updated after every answer: the '
            f'<a href="/runs/{esc(quote(found["run"], safe="~"))}">run page</a> shows the win rate beside the metrics, '
            "and its report.html once updated here.</p></section>")
