"""A run served as it was evaluated: its prompt template on the raw input, classification by label scoring.

A run trained on templated records (``{text, label}`` for classification, ``{prompt, completion}`` or
instruction records for generation) is also served as ``<run>:task``. Its requests carry the raw
input (what the recipe's template puts in its ``{text}``, ``{prompt}`` or ``{instruction}``), not a
prompt: the server renders the run's template around it and answers as evaluation answered. A
classification answer is the label whose tokens are most likely after the prompt, scored by
:func:`lmtune.inference.label_scoring.classify` (the code path of ``eval.json``), with the softmax of the
label log-likelihoods as probabilities; a generation answer is evaluation's greedy
:func:`~lmtune.inference.generation.generate_detailed` with the recipe's ``eval.generation`` controls.

Both run as calls in the engine thread (:meth:`Engine.call`), one evaluation batch at a time, so the
model is only ever touched from that thread and generation of other requests goes on between batches.
"""

from __future__ import annotations

import contextlib
import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from lmtune import precision
from lmtune.data.clean import normalise_text
from lmtune.data.encode import Encoder
from lmtune.data.formats import TEXT_FIELDS, Example, detect
from lmtune.data.templates import Template, resolve
from lmtune.errors import UserError
from lmtune.evaluate.systems import TaskSpec, build_prompts
from lmtune.inference import generation, label_scoring
from lmtune.kinds.tasks import find as find_task
from lmtune.kinds.tasks import task_kind
from lmtune.recipe_eval import GenerationConfig
from lmtune.run_dir import RunDir
from lmtune.serve.engine.batching import BASE, Engine
from lmtune.serve.errors import APIError

SUFFIX = ":task"
# The record field that holds the raw input, per record format (the template puts it in its prompt).
INPUT_FIELD = {"classification": "text", "completion": "prompt", "instruction": "instruction"}
# Placeholders filled from other values (or from nothing a client sends): never asked of a client.
_DERIVED = {"labels", "input_block", "context_block", "label", "completion", "output"}
_ALIASES = {"completion": {"instruction"}, "instruction": {"prompt"}}  # see templates._values
_OPTIONAL = {"input_block": "input", "context_block": "context"}


@dataclass
class Task:
    """What evaluation did with a test record, read back from the run's recipe.

    Attributes:
        type: the recipe's ``task.type``.
        template: the run's prompt template.
        labels: ``task.labels`` (classification).
        format: the record format trained on: ``classification``, ``completion`` or ``instruction``.
        normalize: ``data.clean.normalize``: inputs are normalised as training text was.
        max_new_tokens / batch_size / generation: ``eval.*``.
        precision: ``training.precision``, the autocast evaluation ran under.
    """

    type: str
    template: Template
    labels: list[str] | None
    format: str
    normalize: bool = True
    max_new_tokens: int = 128
    batch_size: int = 8
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    precision: str = "auto"

    @property
    def classifies(self) -> bool:
        return task_kind(self.type).labelled

    @property
    def input_field(self) -> str:
        return INPUT_FIELD[self.format]

    def fields(self) -> tuple[list[str], list[str]]:
        """(fields a request must send besides the raw input, optional fields), by template name."""
        names = [n for part in (self.template.system or "", self.template.prompt)
                 for _, n, _, _ in string.Formatter().parse(part) if n]
        skip = _DERIVED | {self.input_field} | _ALIASES.get(self.format, set())
        required = sorted({n for n in names if n not in skip and n not in _OPTIONAL})
        optional = sorted({_OPTIONAL[n] for n in names if n in _OPTIONAL} - {self.input_field})
        return required, optional

    def describe(self, run: str) -> dict:
        """The task as ``/v1/models`` lists it."""
        required, optional = self.fields()
        return {"type": self.type, "run": run, "labels": self.labels, "input": self.input_field,
                "fields": required, "optional_fields": optional}

    def spec(self, device, max_new_tokens: int | None = None) -> TaskSpec:
        """The evaluation spec of this task (``max_new_tokens``: a request's own limit)."""
        return TaskSpec(self.type, self.labels, self.template, max_new_tokens or self.max_new_tokens, self.batch_size,
                        precision.resolve(self.precision, device), self.generation)

    def example(self, text: str, extra: dict | None, param: str) -> Example:
        """The test record whose input is ``text`` (other template fields from ``extra``).

        Raises:
            APIError (400): an empty input, or a field the template needs that the request lacks.
        """
        record = {**{k: str(v) for k, v in (extra or {}).items()}, self.input_field: text}
        if self.normalize:  # training text was normalised (data.clean.normalize): so is the input
            record = {k: normalise_text(v) if k in TEXT_FIELDS else v for k, v in record.items()}
        if not record[self.input_field].strip():
            raise APIError(400, f"The input text is empty; send the {self.input_field!r} the run classifies or "
                           "completes.", param, "invalid_value")
        required, _ = self.fields()
        missing = [name for name in required if not str(record.get(name, "")).strip()]
        if missing:
            raise APIError(400, f"The run's prompt template also needs {', '.join(map(repr, missing))}; send "
                           f'"fields": {{{", ".join(f"{m!r}: ..." for m in missing)}}} with the request.', "fields",
                           "missing_required_parameter")
        # The reply is what the model writes: the template's completion is rendered empty.
        for target in ("label", "completion", "output"):
            record.setdefault(target, "")
        return Example(record, "request", self.format)


def prompts(model, encoder: Encoder, spec: TaskSpec, examples: list[Example]) -> list[list[int]]:
    """Prompt tokens of ``examples`` exactly as evaluation builds them (template, chat template, fitting).

    Raises:
        APIError (400): the template cannot take a record's values.
    """
    try:
        return build_prompts(model, encoder, spec, examples)[1]
    except UserError as exc:
        raise APIError(400, f"The run's prompt template cannot take this input: {exc.message}", "fields",
                       "invalid_value") from None


def load_task(run_dir: Path, info: dict) -> Task | None:
    """The task a run directory was evaluated on, or None when it has no template to serve it by.

    Runs of chat, raw-text or preference records carry their own structure (served under the run's
    own name with the chat template they were trained with), so they get no task name.
    """
    run = RunDir(run_dir)
    recipe = run.read_recipe() if run.recipe.is_file() else {}
    task = recipe.get("task") or info.get("task") or {}
    kind = find_task(task.get("type"))
    # Served from one raw input: tasks answered per example in text or labels (not numbers, perplexity or pairs).
    if kind is None or not kind.per_example or kind.numeric:
        return None
    fmt = _record_format(run_dir) or (kind.formats[0] if kind.labelled else None)
    if fmt not in INPUT_FIELD:
        return None
    template = resolve(task.get("template"), fmt)
    if template is None or (kind.labelled and not task.get("labels")):
        return None
    data, evaluation = recipe.get("data") or {}, recipe.get("eval") or {}
    return Task(kind.name, template, task.get("labels"), fmt, bool((data.get("clean") or {}).get("normalize", True)),
                int(evaluation.get("max_new_tokens", 128)), int(evaluation.get("batch_size", 8)),
                GenerationConfig(**(evaluation.get("generation") or {})),
                str((recipe.get("training") or {}).get("precision", "auto")))


def _record_format(run_dir: Path) -> str | None:
    """The format of the records the run was trained on (the first line of its saved split)."""
    data = RunDir(run_dir).data
    for name in ("train", "test", "validation"):
        path = data.split(name)
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                line = fh.readline()
            try:
                record = json.loads(line)
            except ValueError:
                continue
            fmt = detect(record) if isinstance(record, dict) else None
            return fmt.name if fmt else None
    return None


def classify_call(spec: TaskSpec, adapter: str, prompts: list[list[int]], label_ids: list[list[int]], pad: int):
    """A function for :meth:`Engine.call`: evaluation's label scoring of ``prompts`` with the run's adapter."""
    def run(engine: Engine):
        with _as_evaluated(engine, adapter, spec.precision) as model:
            return label_scoring.classify(model, prompts, label_ids, pad, spec.batch_size, desc="serve", quiet=True)
    return run


def generate_call(spec: TaskSpec, adapter: str, tokenizer, prompts: list[list[int]], pad: int, stop: list[str]):
    """A function for :meth:`Engine.call`: evaluation's greedy generation with the recipe's controls."""
    controls = spec.generation.model_dump()
    controls["stop"] = list(dict.fromkeys([*controls.get("stop", []), *stop]))

    def run(engine: Engine):
        with _as_evaluated(engine, adapter, spec.precision) as model:
            return generation.generate_detailed(model, tokenizer, prompts, spec.max_new_tokens, pad,
                                                spec.batch_size, desc="serve", quiet=True, **controls)
    return run


@contextlib.contextmanager
def _as_evaluated(engine: Engine, adapter: str, chosen: str):
    """The engine's model with the run's adapter active, under the autocast evaluation ran under.

    Runs in the engine thread, between decoding steps: the engine's own batches name their adapter
    on every step (``Engine._forward``), so switching the active one here changes none of them.
    """
    model = engine.model
    # The engine thread runs under the server's --precision; evaluation ran under training.precision.
    cast = (precision.autocast(engine.device, chosen) if chosen != "fp32"
            else _no_autocast(engine.device))
    with cast:
        if adapter == BASE:
            with model.disable_adapter() if engine.adapters else contextlib.nullcontext():
                yield model
            return
        if model.active_adapter != adapter:
            model.set_adapter(adapter)
        yield model


def _no_autocast(device):
    import torch

    return torch.autocast(device_type=device.type, enabled=False)


def task_name(run_name: str) -> str:
    return run_name + SUFFIX
