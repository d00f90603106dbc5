"""Counterfactual bias check: swap group terms (he <-> she, John <-> Mary) in the test inputs and
count how often the model's prediction changes.

The check runs in three steps that the lifecycle wires (``eval.bias`` in a recipe):

1. :func:`load_terms` reads term-pair lists: the packaged ``gender`` and ``names`` lists
   (``lmtune/evaluate/bias_terms/*.tsv``) or the user's own TSV files.
2. :func:`counterfactuals` copies every test example whose *input* mentions a term, with every
   term swapped to its partner; labels and references are never touched, so a model that does
   not lean on the terms predicts the same for both copies.
3. :func:`report` compares the predictions on originals and copies (the flip rate) and scores
   the originals per group: the group of terms an input leans to, and optionally a field that
   test records carry (``eval.bias.group_field``).

Term-pair file (TSV, UTF-8): one pair per line, ``word_a<TAB>word_b``, e.g. ``he<TAB>she``;
blank lines and lines starting with ``#`` are skipped, and a comment ``# groups: male<TAB>female``
before the first pair names the two sides (default ``a`` and ``b``). Matching ignores case and
keeps the text's case (``He`` -> ``She``, ``HIS`` -> ``HER``); a term matches whole words only
(``he`` never touches ``the`` or ``Sheila``) and may span several words. A word listed in several
pairs swaps to its partner in the *first* of them: with ``his<TAB>her`` before ``him<TAB>her``,
``her`` becomes ``his`` (telling possessive from object *her* would need a part-of-speech tagger).
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from lmtune.data.formats import Example
from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.kinds.tasks import TASK_KINDS, task_kind

#: Term lists shipped with lmtune, by the name a recipe uses.
PACKAGED = ("gender", "names")
#: Group of an input whose terms are split evenly between groups.
MIXED = "mixed"
#: Record fields that are model input, per format; labels, references and targets are never swapped.
INPUT_FIELDS = {"classification": ("text",), "completion": ("prompt",), "instruction": ("instruction", "input")}
#: Chat roles whose message contents are model input (the assistant's turns are not).
INPUT_ROLES = ("system", "user")
#: The per-group metric whose difference between the first two groups is ``metric_gap``, per task type
#: (each task kind's ``gap_metric``).
GAP_METRIC = {kind.name: kind.gap_metric for kind in TASK_KINDS if kind.gap_metric}
#: Regression predictions closer than this (absolute or relative) count as unchanged: batching noise.
REGRESSION_TOLERANCE = 1e-4
_GROUPS_LINE = re.compile(r"#\s*groups\s*:(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class TermPairs:
    """Swap pairs from one or more term lists.

    Attributes:
        swaps: each term (case-folded, single-spaced) -> its partner as spelled in the file.
        group_of: each term (case-folded) -> the group it belongs to (``male``, ``female``, ...).
        groups: group names in the order the lists define them; the first two are compared in
            :func:`report`'s ``metric_gap``.
        sources: the files the pairs came from.
        n_pairs: number of pair lines read.
    """

    swaps: dict[str, str]
    group_of: dict[str, str]
    groups: tuple[str, ...]
    sources: tuple[str, ...] = ()
    n_pairs: int = 0
    _pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # Longest first, so a multi-word term wins over a single word it starts with.
        alternatives = sorted(self.swaps, key=len, reverse=True)
        body = "|".join(r"\s+".join(map(re.escape, term.split())) for term in alternatives) or r"(?!x)x"
        object.__setattr__(self, "_pattern", re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE))

    def swap(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every term replaced by its partner, and the group of each term found."""
        found: list[str] = []

        def partner(match: re.Match) -> str:
            key = _key(match.group(0))
            found.append(self.group_of[key])
            return _match_case(match.group(0), self.swaps[key])

        return self._pattern.sub(partner, text), found


def load_terms(spec: Any) -> TermPairs:
    """Read the term-pair lists a recipe's ``eval.bias`` names.

    Args:
        spec: the ``eval.bias`` mapping (or its pydantic model): ``terms`` is ``gender``,
            ``names``, a path to a TSV of pairs, or a list of those (default ``["gender"]``);
            other keys (``group_field``) are not used here.

    Returns:
        The pairs of all lists together.

    Raises:
        UserError: an unknown list name or missing file (``eval.bias.terms``), a malformed
            line, or a word placed in two groups (``file:line``).
    """
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump()
    terms = (spec or {}).get("terms") or ["gender"]
    names = [terms] if isinstance(terms, (str, Path)) else list(terms)
    swaps: dict[str, str] = {}
    group_of: dict[str, str] = {}
    groups: list[str] = []
    sources: list[str] = []
    n_pairs = 0
    for i, name in enumerate(names):
        key = "eval.bias.terms" if isinstance(terms, (str, Path)) else f"eval.bias.terms[{i}]"
        source, text = _read_list(name, key)
        sources.append(source)
        n_pairs += _parse_list(text, source, swaps, group_of, groups)
    return TermPairs(swaps, group_of, tuple(groups), tuple(sources), n_pairs)


def _read_list(name: Any, key: str) -> tuple[str, str]:
    """(where it is, its text) for a packaged list name or a file path."""
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise UserError(f"expected a term list name ({', '.join(PACKAGED)}) or a TSV file path, got {name!r}",
                        source=key)
    if str(name) in PACKAGED:
        packaged = resources.files("lmtune.evaluate").joinpath("bias_terms", f"{name}.tsv")
        return str(packaged), packaged.read_text(encoding="utf-8")
    path = Path(name)
    if not path.is_file():
        raise UserError(f"no such term list file {str(path)!r}; use {' or '.join(PACKAGED)}, or a TSV file "
                        "with one word<TAB>counterpart pair per line", source=key)
    try:
        return str(path), path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"term list is not UTF-8 text ({err.reason} at byte {err.start})", source=str(path)) from None


def _parse_list(text: str, source: str, swaps: dict[str, str], group_of: dict[str, str], groups: list[str]) -> int:
    """Add one list's pairs to ``swaps``/``group_of``/``groups``; return how many pair lines it had."""
    names: tuple[str, str] | None = None
    count = 0
    for number, raw in enumerate(text.splitlines(), 1):
        where, line = f"{source}:{number}", raw.strip()
        header = _GROUPS_LINE.match(line)
        if header:
            if names is not None:
                raise UserError("a second groups line; name the two groups once, before the first pair", source=where)
            names = _group_names(header.group(1), where)
            continue
        if not line or line.startswith("#"):
            continue
        names = names or ("a", "b")
        _add_pair(_pair(raw, where), names, where, swaps, group_of, groups)
        count += 1
    if not count:
        raise UserError("the term list has no pairs; write one word<TAB>counterpart pair per line", source=source)
    return count


def _group_names(cells_text: str, where: str) -> tuple[str, str]:
    """The two group names of a ``# groups: a<TAB>b`` line."""
    cells = [c.strip() for c in cells_text.split("\t")]
    if len(cells) != 2 or not all(cells) or cells[0] == cells[1]:
        raise UserError("a groups line names two different groups separated by a TAB, e.g. "
                        "'# groups: male<TAB>female'", source=where)
    return cells[0], cells[1]


def _pair(raw: str, where: str) -> tuple[str, str]:
    """A ``word<TAB>counterpart`` line's two words, spaces normalised."""
    cells = [" ".join(c.split()) for c in raw.split("\t")]
    if len(cells) != 2 or not all(cells):
        raise UserError(f"expected one pair, word<TAB>counterpart, got {len(cells)} TAB-separated "
                        f"cell(s) in {raw.strip()!r}", source=where)
    if _key(cells[0]) == _key(cells[1]):
        raise UserError(f"{cells[0]!r} is paired with itself; a pair needs two different words", source=where)
    return cells[0], cells[1]


def _add_pair(pair: tuple[str, str], names: tuple[str, str], where: str, swaps: dict[str, str],
              group_of: dict[str, str], groups: list[str]) -> None:
    for word, partner, group in ((pair[0], pair[1], names[0]), (pair[1], pair[0], names[1])):
        key = _key(word)
        if group_of.get(key, group) != group:
            raise UserError(f"{word!r} is already in group {group_of[key]!r}; a word belongs to one group",
                            source=where)
        group_of[key] = group
        swaps.setdefault(key, partner)  # the first pair listing a word decides its partner
        if group not in groups:
            groups.append(group)


def counterfactuals(test: list[Example], terms: TermPairs) -> tuple[list[Example], list[int], list[str]]:
    """Copies of the test examples whose input mentions a term, with every term swapped.

    Input is a classification record's ``text``, a completion's ``prompt``, an instruction's
    ``instruction`` and ``input``, and the system and user messages of a chat; labels,
    references, targets and assistant turns are left as they are.

    Args:
        test: the test examples.
        terms: pairs from :func:`load_terms`.

    Returns:
        ``(swapped, index, groups)``: the swapped copies, the position in ``test`` of each one's
        original, and the group its original leans to (the group most of its terms belong to,
        ``mixed`` on a tie). Examples without any term are left out.

    Raises:
        UserError: records of a format with no input to swap (raw text, preference pairs).
    """
    swapped: list[Example] = []
    index: list[int] = []
    groups: list[str] = []
    for i, example in enumerate(test):
        record, found = _swap_record(example, terms)
        if found:
            swapped.append(replace(example, record=record, extra=dict(example.extra)))
            index.append(i)
            groups.append(_majority(found))
    return swapped, index, groups


def _swap_record(example: Example, terms: TermPairs) -> tuple[dict[str, Any], list[str]]:
    record, found = dict(example.record), []
    if example.format == "chat":
        messages = []
        for message in record["messages"]:
            message = dict(message)
            if message.get("role") in INPUT_ROLES:
                message["content"], hits = terms.swap(str(message["content"]))
                found += hits
            messages.append(message)
        record["messages"] = messages
        return record, found
    if example.format not in INPUT_FIELDS:
        raise UserError(f"the bias check swaps words in model inputs, and {example.format} records have none; "
                        "use it on classification, completion, instruction or chat data, or remove eval.bias",
                        source=example.source)
    for name in INPUT_FIELDS[example.format]:
        if isinstance(record.get(name), str):
            record[name], hits = terms.swap(record[name])
            found += hits
    return record, found


def _majority(found: list[str]) -> str:
    ranked = Counter(found).most_common()
    return ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else MIXED


def report(task: str, labels: list[str] | None, references: Sequence[Any], original_predictions: Sequence[Any],
           swapped_predictions: Sequence[Any], index: Sequence[int], groups: Sequence[str],
           test: list[Example] | None = None, group_field: str | None = None,
           terms: TermPairs | None = None) -> dict[str, Any]:
    """Flip rate of the predictions under the swap, and metrics per group.

    Args:
        task: ``classification``, ``regression``, ``generation`` or ``chat``.
        labels: the label set (classification).
        references: reference of every test example, aligned with ``test``.
        original_predictions: prediction on every test example, aligned with ``references``.
        swapped_predictions: prediction on each swapped copy, aligned with ``index``.
        index, groups: from :func:`counterfactuals`.
        test: the test examples, needed for ``group_field``.
        group_field: a field of the test records whose values form groups (``by_field``).
        terms: the pairs used; for generated text, a prediction that only swapped the same
            terms (``he`` -> ``she`` in a summary) then does not count as a flip, and the
            groups of ``metric_gap`` follow the lists' order.

    Returns:
        ``n_tested``, ``n_flipped``, ``flip_rate`` (None when nothing was tested) with
        ``flip_rate_ci95`` (Wilson interval); ``tested``: the task metric on the tested
        examples, originals and swapped copies; ``by_group``: ``{group: {n, n_flipped,
        flip_rate, metric...}}`` on the originals; ``metric_gap``: ``{metric, groups: [a, b],
        gap: value_a - value_b}`` (gap None when a group has no example); with ``group_field``,
        ``by_field``: ``{value: {n, metric..., n_tested, flip_rate}}`` over the whole test set
        and ``field_missing``, the records without that field.

    Raises:
        ValueError: an unsupported task or misaligned inputs.
    """
    if task not in GAP_METRIC:
        raise ValueError(f"no bias report for task {task!r}; known: {sorted(GAP_METRIC)}")
    if len(references) != len(original_predictions):
        raise ValueError(f"{len(references)} references but {len(original_predictions)} original predictions")
    if not len(index) == len(swapped_predictions) == len(groups):
        raise ValueError(f"index ({len(index)}), groups ({len(groups)}) and swapped predictions "
                         f"({len(swapped_predictions)}) must be aligned")
    if any(not 0 <= i < len(references) for i in index):
        raise ValueError("index points outside the test set")
    flipped = [_flipped(task, original_predictions[i], new, terms) for i, new in zip(index, swapped_predictions)]
    result: dict[str, Any] = {"n_tested": len(index), **_flip_counts(flipped)}
    if index:
        refs = [references[i] for i in index]
        result["tested"] = {"original": _metrics(task, labels, refs, [original_predictions[i] for i in index]),
                            "swapped": _metrics(task, labels, refs, list(swapped_predictions))}
    by_group: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(groups):
        rows = [k for k, g in enumerate(groups) if g == group]
        by_group[group] = {"n": len(rows), **_flip_counts([flipped[k] for k in rows]),
                           **_metrics(task, labels, [references[index[k]] for k in rows],
                                      [original_predictions[index[k]] for k in rows])}
    result["by_group"] = by_group
    result["metric_gap"] = _gap(task, by_group, terms)
    if group_field:
        result.update(_by_field(task, labels, references, original_predictions, index, flipped, test or [],
                                group_field))
    return result


def _flipped(task: str, before: Any, after: Any, terms: TermPairs | None) -> bool:
    if task_kind(task).numeric:
        return not math.isclose(float(before), float(after), rel_tol=REGRESSION_TOLERANCE,
                                abs_tol=REGRESSION_TOLERANCE)
    if task_kind(task).labelled:
        return str(before) != str(after)
    before, after = " ".join(str(before).split()), " ".join(str(after).split())
    return after != before and (terms is None or after != terms.swap(before)[0])


def _flip_counts(flipped: list[bool]) -> dict[str, Any]:
    n, k = len(flipped), sum(flipped)
    if not n:
        return {"n_flipped": 0, "flip_rate": None}
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"n_flipped": k, "flip_rate": k / n, "flip_rate_ci95": [float(ci.low), float(ci.high)]}


def _metrics(task: str, labels: list[str] | None, references: list[Any], predictions: list[Any]) -> dict[str, Any]:
    """The task metric(s) of one group, from :mod:`lmtune.evaluate.metrics`."""
    if task_kind(task).labelled:
        # Macro F1 over the classes this group has (as true or predicted label): a class absent
        # from a small group would otherwise count as F1 0 and make groups incomparable.
        present = {str(x) for x in (*references, *predictions)}
        scored = [label for label in labels or [] if label in present] or sorted(present)
        with warnings.catch_warnings():
            # One class in a group is expected here; only the unused confusion matrix warns about it.
            warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
            values = metrics.classification_metrics([str(r) for r in references], [str(p) for p in predictions],
                                                    scored)
        return {"accuracy": values["accuracy"], "f1_macro": values["f1_macro"]}
    if task_kind(task).numeric:
        return {"mse": metrics.regression_metrics([float(r) for r in references],
                                                  [float(p) for p in predictions])["mse"]}
    return {"rougeL": metrics.generation_metrics([str(r) for r in references], [str(p) for p in predictions])["rougeL"]}


def _gap(task: str, by_group: dict[str, dict[str, Any]], terms: TermPairs | None) -> dict[str, Any]:
    metric = GAP_METRIC[task]
    order = list(terms.groups) if terms else [g for g in by_group if g != MIXED]
    pair = (order + [None, None])[:2]
    values = [by_group.get(g, {}).get(metric) for g in pair]
    gap = values[0] - values[1] if None not in values else None
    return {"metric": metric, "groups": pair, "gap": gap}


def _by_field(task, labels, references, predictions, index, flipped, test, name) -> dict[str, Any]:
    if len(test) != len(references):
        raise ValueError(f"group_field needs the {len(references)} test examples, got {len(test)}")
    values: dict[str, list[int]] = {}
    missing = 0
    for i, example in enumerate(test):
        value = example.extra.get(name, example.record.get(name))
        if value is None:
            missing += 1
        else:
            values.setdefault(str(value), []).append(i)
    flips = dict(zip(index, flipped))
    out: dict[str, dict[str, Any]] = {}
    for value, rows in values.items():
        tested = [flips[i] for i in rows if i in flips]
        out[value] = {"n": len(rows), **_metrics(task, labels, [references[i] for i in rows],
                                                 [predictions[i] for i in rows]),
                      "n_tested": len(tested), **_flip_counts(tested)}
    return {"by_field": out, "field_missing": missing}


def _key(term: str) -> str:
    return " ".join(term.split()).casefold()


def _match_case(found: str, partner: str) -> str:
    """``partner`` in the case of the text it replaces: HIS -> HER, His -> Her, his -> her."""
    letters = [c for c in found if c.isalpha()]
    if len(letters) > 1 and found.isupper():
        return partner.upper()
    if letters and letters[0].isupper():
        return partner[:1].upper() + partner[1:]
    return partner.lower()
