"""What each system got right and wrong: for classification the confusion matrices, per-class precision,
recall and F1, and the test inputs some system misclassified with every system's answer; for other tasks
the first test examples with every system's output.
"""

from __future__ import annotations

from typing import Any

from lmtune.evaluate import metrics
from lmtune.report import html, plots
from lmtune.report.run import Run
from lmtune.run_dir import shown_text

EXAMPLES = 8
MISCLASSIFIED = 20
INPUT_CHARS = 300


def details(run: Run) -> str:
    """The task's sections: classification details, or examples of the outputs."""
    if not run.labelled:
        return examples(run)
    predictions = run.predictions()
    return confusion_matrices(run) + per_class(run, predictions) + misclassified(run, predictions)


def confusion_matrices(run: Run) -> str:
    matrices = {}
    for system, result in run.results.items():
        matrix = result.get("confusion_matrix")
        square = isinstance(matrix, list) and matrix and all(
            isinstance(row, list) and len(row) == len(matrix) and all(map(html.is_number, row)) for row in matrix)
        if square:
            labels = result.get("labels") or run.labels
            names = labels if labels and len(labels) == len(matrix) else range(len(matrix))
            matrices[system] = (matrix, [str(name) for name in names])
    if not matrices:
        return ""
    # One colour scale for all systems, so equal shades mean equal counts across the row.
    vmax = max(max(max(row) for row in matrix) for matrix, _ in matrices.values())
    images = "".join(html.img(plots.confusion_heatmap(matrix, labels, system, vmax), f"confusion matrix of {system}")
                     for system, (matrix, labels) in matrices.items())
    return ('<section><h2>Confusion matrices</h2><p class="meta">rows: true label, columns: '
            f'predicted label</p><div class="row">{images}</div></section>')


def per_class(run: Run, predictions: dict[str, list[dict]]) -> str:
    """Precision, recall and F1 of each label for each system, from ``eval.json`` or else from the predictions."""
    scores, computed = {}, []
    for system, result in run.results.items():
        if isinstance(result.get("per_class"), dict) and result["per_class"]:
            scores[system] = result["per_class"]
        elif system in predictions:
            found = _from_predictions(predictions[system], run.labels)
            if found:
                scores[system], computed = found, computed + [system]
    if not scores:
        return ""
    labels = list(dict.fromkeys(label for table in scores.values() for label in table))
    support = {label: next((t[label].get("support") for t in scores.values() if label in t), None)
               for label in labels}
    rows = [[f"<th>{html.breakable(label)}</th>", html.cell(support[label])]
            + [_score_cell(table.get(label)) for table in scores.values()] for label in labels]
    source = (f" Computed from the predictions for {', '.join(computed)} (eval.json has no per-class scores)."
              if computed else "")
    return ('<section><h2>Per-class scores</h2><p class="meta">F1 of each label, precision (P) and recall (R) '
            f"beneath; support: test examples with that label.{html.esc(source)}</p>"
            + html.table(["label", "support"] + list(scores), rows, "per-class") + "</section>")


def _from_predictions(rows: list[dict], labels: list[str] | None) -> dict | None:
    references = [str(r.get("reference")) for r in rows]
    guesses = [str(r.get("prediction")) for r in rows]
    try:
        return metrics.classification_metrics(references, guesses, labels)["per_class"]
    except ValueError:  # no rows, or a label set that does not fit the predictions
        return None


def _score_cell(score: Any) -> str:
    if not isinstance(score, dict) or not html.is_number(score.get("f1")):
        return html.cell(None)
    rest = " · ".join(f"{key[0].upper()} {score[key]:.3f}" for key in ("precision", "recall")
                      if html.is_number(score.get(key)))
    return f'<td class="num">{score["f1"]:.3f}' + (f"<br><small>{rest}</small>" if rest else "") + "</td>"


def misclassified(run: Run, predictions: dict[str, list[dict]]) -> str:
    """Test inputs that at least one system gets wrong, with the reference and every system's answer.

    Those the best system gets wrong come first, then those most systems get wrong; at most
    :data:`MISCLASSIFIED` are shown and the total is said.
    """
    if not predictions:
        return ""
    n = min(len(rows) for rows in predictions.values())
    best = _best_system(run, predictions)
    wrong = [i for i in range(n) if any(_wrong(rows[i]) for rows in predictions.values())]
    if not wrong:
        return ""
    wrong.sort(key=lambda i: (not (best and _wrong(predictions[best][i])),
                              -sum(_wrong(rows[i]) for rows in predictions.values()), i))
    rows = []
    for i in wrong[:MISCLASSIFIED]:
        answers = [system_rows[i] for system_rows in predictions.values()]
        # The shortest input is the question itself; few-shot and RAG inputs may carry more before it.
        question = min((a.get("input") for a in answers), key=lambda x: len(shown_text(x)))
        reference = html.breakable(html.fmt(answers[0].get("reference"), 200))
        rows.append([_text_cell(question, INPUT_CHARS), f"<td>{reference}</td>"] + [_answer_cell(a) for a in answers])
    order = f"; those {best} gets wrong first" if best else ""
    uneven = (" The systems' prediction files differ in length; the first "
              f"{n} examples of each are compared." if len({len(r) for r in predictions.values()}) > 1 else "")
    return (f'<section><h2>Misclassified examples</h2><p class="meta">{len(rows)} of {len(wrong)} test examples '
            f"that at least one system gets wrong{html.esc(order)}; wrong answers are marked ✗."
            f"{html.esc(uneven)}</p>"
            + html.table(["input", "reference"] + list(predictions), rows, "examples misclassified") + "</section>")


def _best_system(run: Run, predictions: dict[str, list[dict]]) -> str | None:
    primary = run.primary
    values = {s: v for s, v in (run.values(primary) if primary else {}).items() if s in predictions}
    return metrics.best_systems(values, primary)[0] if values else None


def _wrong(row: dict) -> bool:
    return str(row.get("prediction")) != str(row.get("reference"))


def _answer_cell(row: dict) -> str:
    answer = html.breakable(html.fmt(row.get("prediction"), 200))
    return f'<td class="wrong">✗&nbsp;{answer}</td>' if _wrong(row) else f'<td class="right">{answer}</td>'


def examples(run: Run) -> str:
    """The first test examples with the reference and every system's output."""
    systems = run.predictions(limit=EXAMPLES)
    if not systems:
        return ""
    first = next(iter(systems.values()))
    rows = []
    for i, example in enumerate(first[:EXAMPLES]):
        cells = [_text_cell(example.get("input"), INPUT_CHARS), _text_cell(example.get("reference"))]
        cells += [_text_cell(lines[i].get("prediction") if i < len(lines) else None) for lines in systems.values()]
        rows.append(cells)
    return (f"<section><h2>Examples</h2><p class=\"meta\">first {len(rows)} test examples</p>"
            f"{html.table(['input', 'reference'] + list(systems), rows, 'examples')}</section>")


def _text_cell(value: Any, limit: int = html.TEXT_CHARS) -> str:
    return f"<td>{html.esc(html.fmt(shown_text(value) if value is not None else None, limit))}</td>"
