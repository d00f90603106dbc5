"""Graders in OpenAI's grader schema (``eval.graders``; GRPO's reward): the objects, checked before anything runs.

The shapes are OpenAI's, so a grader written for its evals or reinforcement fine-tuning ports unchanged:
``string_check``, ``text_similarity``, ``python``, ``score_model`` and ``multi``, with ``{{ sample.output_text }}``,
``{{ sample.output_json.<key> }}`` and ``{{ item.<field> }}`` templates. lmtune adds ``file:`` to the python
grader (its source in a file) and a ``callable`` grader (a Python function by import path). What OpenAI offers
that a local run cannot do (``cosine`` needs OpenAI's embeddings model; images, audio and tool calls in samples)
is refused here with the reason. Running them is :mod:`lmtune.graders`'.

This module sits below :mod:`lmtune.recipe_eval` (which holds ``eval.graders``), so the two checks that need
more than a type (a template's variables, a multi grader's formula) live here too.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Annotated, Any, Literal

import simpleeval
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

#: ``{{ namespace.path }}``, spaces inside the braces allowed, as OpenAI writes them.
VARIABLE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
#: A path after the namespace: ``.key`` segments and ``[0]`` indices (OpenAI: "JSON path like syntax").
_PATH = re.compile(r"(?:\.[^.\[\]\s{}]+|\[\d+\])+")
#: What a sample holds in OpenAI's schema but not in lmtune's (plain text completions).
_NOT_LOCAL = ("output_tools", "choices", "output_audio")
#: A grader's key: a name a multi grader's formula can use.
GRADER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TAGS = ("string_check", "text_similarity", "python", "score_model", "multi", "callable")


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    name: str | None = Field(None, description="OpenAI's display name; lmtune names a grader by its key.")


def _templated(text: str) -> str:
    check_template(text)
    return text


class StringCheckGrader(_Grader):
    """1 when ``input`` and ``reference`` compare as ``operation`` says, else 0 (OpenAI: eq and ne are exact and
    case-sensitive; like is "input contains reference", ilike the same ignoring case)."""

    type: Literal["string_check"]
    input: str = Field(description="The text graded, e.g. '{{sample.output_text}}'.")
    reference: str = Field(description="What it is compared with, e.g. '{{item.answer}}'.")
    operation: Literal["eq", "ne", "like", "ilike"]

    _templates = field_validator("input", "reference")(_templated)


TextMetric = Literal["fuzzy_match", "bleu", "gleu", "meteor", "cosine", "rouge_1", "rouge_2", "rouge_3", "rouge_4",
                     "rouge_5", "rouge_l"]


class TextSimilarityGrader(_Grader):
    """A similarity of ``input`` to ``reference`` in 0..1 (see :mod:`lmtune.graders.text` for each metric's library)."""

    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: TextMetric
    pass_threshold: float | None = Field(None, description="Scores at or above it pass (reported as pass_rate).")

    _templates = field_validator("input", "reference")(_templated)

    @field_validator("evaluation_metric")
    @classmethod
    def _computable(cls, metric: str) -> str:
        if metric == "cosine":
            raise ValueError("cosine compares OpenAI text-embedding-3-large embeddings, a hosted model lmtune cannot "
                             "run offline; use fuzzy_match, bleu, gleu, meteor or rouge_1..rouge_5, rouge_l")
        return metric


class PythonGrader(_Grader):
    """``def grade(sample, item) -> float`` run in a subprocess with a time limit (OpenAI's python grader)."""

    type: Literal["python"]
    source: str | None = Field(None, description="The code, defining grade(sample, item) -> float (OpenAI's key).")
    file: str | None = Field(None, description="lmtune's extension: a .py file defining grade(sample, item).")
    image_tag: str | None = Field(None, description="OpenAI's sandbox image; accepted and ignored: the grader runs "
                                                    "in this Python environment.")
    timeout_s: float = Field(10.0, gt=0, le=600, description="Seconds one sample may take; past it the sample "
                                                             "scores 0 and counts as a timeout.")
    pass_threshold: float | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.source is None) == (self.file is None):
            raise ValueError("source: give the code as source: or a file as file:, one of them")
        if self.source is not None:
            check_python_source(self.source, "source")
        return self


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["input_text", "output_text"]
    text: str

    _templates = field_validator("text")(_templated)


class Message(BaseModel):
    """One message of a judge's prompt; ``developer`` is OpenAI's name for the system role."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    type: Literal["message"] | None = None

    @field_validator("content")
    @classmethod
    def _templates(cls, content):
        if isinstance(content, str):
            check_template(content)
        return content

    def text(self) -> str:
        """The content as one string (parts joined)."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class SamplingParams(BaseModel):
    """How the judge decodes. Without a temperature (or at 0) it decodes greedily: the same sample gets the
    same score every time."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    max_completions_tokens: int | None = Field(None, ge=1, description="Tokens the judge may write (default 32).")
    reasoning_effort: str | None = Field(None, description="OpenAI's reasoning models only; accepted and ignored.")


class ScoreModelGrader(_Grader):
    """A local judge model prompted with ``input``; the number it answers, clipped to ``range``, is the score."""

    type: Literal["score_model"]
    model: str = Field(description="The judge: a packaged alias, a model directory or a hub id; loaded once.")
    input: list[Message] = Field(min_length=1)
    range: tuple[float, float] = (0.0, 1.0)
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    pass_threshold: float | None = None

    @field_validator("range")
    @classmethod
    def _ordered(cls, bounds):
        if not bounds[0] < bounds[1]:
            raise ValueError(f"the low end must be below the high end, e.g. [0, 1] (got {list(bounds)})")
        return bounds


class CallableGrader(_Grader):
    """lmtune's extension: ``function(sample, item) -> float`` imported from ``path`` and called in this process."""

    type: Literal["callable"]
    path: str = Field(description="'package.module:function'.")

    @field_validator("path")
    @classmethod
    def _module_colon_function(cls, path: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", path):
            raise ValueError(f"expected 'package.module:function' (got {path!r})")
        return path


class MultiGrader(_Grader):
    """Several graders, combined per sample by ``calculate_output`` over their keys (OpenAI's multigrader)."""

    type: Literal["multi"]
    graders: dict[str, GraderConfig] = Field(min_length=1)
    calculate_output: str = Field(description="e.g. '(name + email) / 2', or 'min(format, 0.5 * answer + 0.5)'.")

    @model_validator(mode="after")
    def _formula(self):
        check_names(self.graders)
        check_formula(self.calculate_output, list(self.graders))
        return self


GraderConfig = Annotated[StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | MultiGrader
                         | CallableGrader, Field(discriminator="type")]
MultiGrader.model_rebuild()
_GRADERS = TypeAdapter(dict[str, GraderConfig])
_ONE = TypeAdapter(GraderConfig)


def parse_graders(raw: Any) -> dict[str, Any]:
    """``{name: grader}`` validated; a problem is one ValueError naming its path (``format.reference: ...``), so
    a recipe reports it as ``eval.graders.format.reference``."""
    if isinstance(raw, dict) and all(isinstance(g, BaseModel) for g in raw.values()):
        return raw
    try:
        graders = _GRADERS.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None
    check_names(graders)
    return graders


def parse_grader(raw: Any) -> Any:
    """One grader object (a dict in OpenAI's shape) validated; ValueError names the problem's path."""
    if isinstance(raw, BaseModel):
        return raw
    try:
        return _ONE.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(_first_problem(exc, keyed=False)) from None


def check_names(graders: dict) -> None:
    """Grader keys are names a formula, ``eval.rank_by`` and the results use: plain identifiers."""
    bad = [k for k in graders if not GRADER_NAME.fullmatch(str(k))]
    if bad:
        raise ValueError(f"{bad[0]}: a grader's key is a plain name (letters, digits, _), e.g. exact_answer")


def _first_problem(exc: ValidationError, keyed: bool = True) -> str:
    """The first error as ``path: what``, in the recipe's terms: without the union members pydantic names in
    its paths (a grader's type after its key, ``str`` or ``list[ContentPart]`` inside a message)."""
    errors = exc.errors()
    # A union's members each report; the checks' own messages (value errors) say more than "not a string".
    err = next((e for e in errors if e.get("type") == "value_error"), errors[0])
    path = _recipe_path(list(err.get("loc", ())), keyed)
    kind, msg = err.get("type", ""), err.get("msg", "invalid value").removeprefix("Value error, ")
    head, sep, rest = msg.partition(": ")
    if kind == "value_error" and sep and " " not in head:  # a model's check names its key first
        path, msg = [*path, *(p for p in head.split(".") if p not in path[-1:])], rest
    if kind == "union_tag_invalid":
        msg = f"unknown grader type {err.get('input', {}).get('type')!r}; choose from {', '.join(_TAGS)}"
    elif kind == "union_tag_not_found":
        path, msg = [*path, "type"], f"required key is missing; one of {', '.join(_TAGS)}"
    elif kind == "extra_forbidden":
        msg = "unknown key (see \"Graders\" in README.md for each grader's keys)"
    elif kind == "missing":
        msg = "required key is missing"
    where = ".".join(path)
    return f"{where}: {msg}" if where else msg


def _recipe_path(loc: list, keyed: bool) -> list[str]:
    """``loc`` without the grader type that follows each grader's key (or opens a single grader's path)."""
    parts, i, expect_key = [], 0, keyed
    if not keyed and loc and loc[0] in _TAGS:
        i = 1
    while i < len(loc):
        part = loc[i]
        i += 1
        if isinstance(part, str) and (part == "str" or "[" in part or part.startswith("function-")):
            continue
        parts.append(str(part))
        if expect_key and i < len(loc) and loc[i] in _TAGS:
            i += 1
        expect_key = not expect_key and part == "graders"
    return parts


def check_template(text: str) -> None:
    """Every ``{{ }}`` of ``text`` names ``sample.output_text``, ``sample.output_json[.path]`` or ``item.<path>``.

    Raises:
        ValueError: another namespace, a sample variable lmtune's plain-text samples lack, or a malformed path.
    """
    for variable in VARIABLE.findall(text):
        namespace, _, rest = variable.partition(".")
        path = variable[len(namespace):]
        if namespace not in ("sample", "item") or not rest or not _PATH.fullmatch(path):
            raise ValueError(f"template variable {{{{{variable}}}}}: write {{{{sample.output_text}}}}, "
                             "{{sample.output_json.<key>}} or {{item.<field>}} (the namespaces are sample and item)")
        head = re.split(r"[.\[]", rest)[0]
        if namespace == "sample" and head in _NOT_LOCAL:
            raise ValueError(f"template variable {{{{{variable}}}}}: lmtune's samples are plain text completions; "
                             "use sample.output_text or sample.output_json.<key>")
        if namespace == "sample" and (head not in ("output_text", "output_json") or
                                      (head == "output_text" and rest != "output_text")):
            raise ValueError(f"template variable {{{{{variable}}}}}: a sample has output_text and output_json")


def item_paths(text: str) -> list[str]:
    """The ``item.<path>`` variables of a template, each as its path (``answer``, ``meta.tags[0]``)."""
    return [v.partition(".")[2] for v in VARIABLE.findall(text) if v.startswith("item.")]


def check_python_source(source: str, where: str) -> None:
    """``source`` parses and defines ``grade`` at its top level (OpenAI's contract).

    Raises:
        ValueError: a syntax error (with its line) or no ``grade`` function.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"{where}: not valid Python (line {exc.lineno}: {exc.msg})") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
        raise ValueError(f"{where}: defines no top-level function grade(sample, item) -> float")


#: The formula's functions: OpenAI's list (min, max, abs, floor, ceil, exp, sqrt, log).
FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
             "sqrt": math.sqrt, "log": math.log}


def formula_evaluator(names: dict[str, float]) -> simpleeval.SimpleEval:
    """An evaluator of ``calculate_output`` over ``names`` (each grader's score).

    simpleeval (a maintained safe evaluator) walks the expression; it is narrowed here to what a formula
    needs: numbers, names, ``+ - * /``, powers, unary signs and :data:`FUNCTIONS`. Every other node
    (attributes, subscripts, comparisons, strings, keywords) is refused. Evaluate :func:`formula_source`.
    """
    operators = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
                 ast.Pow: simpleeval.safe_power, ast.USub: operator.neg, ast.UAdd: operator.pos}
    evaluator = simpleeval.SimpleEval(operators=operators, functions=dict(FUNCTIONS), names=dict(names))
    allowed = (ast.Expr, ast.Name, ast.UnaryOp, ast.BinOp, ast.Call, ast.Constant)
    evaluator.nodes = {k: v for k, v in evaluator.nodes.items() if k in allowed}
    evaluator.nodes[ast.Constant] = _number
    return evaluator


def formula_source(formula: str) -> str:
    """``calculate_output`` as Python: OpenAI writes powers as ``^``, which Python reads as a looser xor."""
    return formula.strip().replace("^", "**")


def _number(node: ast.Constant) -> float:
    if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise simpleeval.FeatureNotAvailable(f"{node.value!r} is not a number")
    return node.value


def check_formula(formula: str, names: list[str]) -> None:
    """``formula`` is one expression over ``names`` that :func:`formula_evaluator` can compute.

    It is evaluated once with every score at 0.5: a name, function or operator it does not know fails here,
    before anything is graded (a division by zero or a log of 0 at that point is left to the samples).

    Raises:
        ValueError: ``calculate_output: <why>``.
    """
    formula = formula_source(formula)
    try:
        ast.parse(formula, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"calculate_output: not a formula ({exc.msg}); e.g. '(name + email) / 2'") from None
    try:
        value = formula_evaluator(dict.fromkeys(names, 0.5)).eval(formula)
    except (ZeroDivisionError, ValueError, OverflowError):
        return
    except simpleeval.NameNotDefined as exc:
        raise ValueError(f"calculate_output: {exc.name!r} is not a grader of this multi grader; its graders: "
                         f"{', '.join(names)}") from None
    except simpleeval.FunctionNotDefined as exc:
        raise ValueError(f"calculate_output: function {exc.func_name!r} is not available; use "
                         f"{', '.join(FUNCTIONS)}") from None
    except (simpleeval.InvalidExpression, TypeError) as exc:
        raise ValueError(f"calculate_output: {exc}; a formula has numbers, grader names, + - * / ** ^, "
                         f"{', '.join(FUNCTIONS)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"calculate_output: gives {value!r}, not a number")
