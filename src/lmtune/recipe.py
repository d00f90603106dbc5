"""The recipe: one YAML file that drives the whole lifecycle, validated by pydantic.

Every problem is reported at once, each naming its key path (``training.learning_rate``),
so a user fixes a recipe in one pass instead of one error per run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from lmtune.errors import UserError
from lmtune.kinds.tasks import TASK_TYPES, task_kind
from lmtune.recipe_data import CleanConfig, DataConfig, SelfTrainingConfig, SplitConfig, SubsetConfig  # noqa: F401
from lmtune.recipe_distill import ADAPTER_NEEDED, DistillConfig
from lmtune.recipe_eval import (  # noqa: F401  (re-exported: `from lmtune.recipe import EvalConfig` keeps working)
    BiasConfig,
    CostConfig,
    EvalConfig,
    ForgettingConfig,
    GenerationConfig,
    RagConfig,
    _Strict,
)
from lmtune.recipe_grpo import GRPOConfig
from lmtune.recipe_grpo import check as check_grpo
from lmtune.recipe_model import ModelConfig, check_precision
from lmtune.recipe_parallel import DistributedConfig
from lmtune.recipe_preference import PreferenceLossConfig
from lmtune.recipe_search import SearchSpace
from lmtune.train.trackers.registry import NAMES as TRACKER_NAMES

#: ``task.type``: a registered task kind (:mod:`lmtune.kinds.tasks`).
TaskType = Literal[TASK_TYPES]

#: A run name is one plain directory name under runs/: never runs/ itself, its parent, a path, or hidden.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: numpy's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1
#: Where training metrics can be logged: jsonl (always written) and the backends of :mod:`lmtune.train.trackers`.
Tracker = Literal[TRACKER_NAMES]


class InlineTemplate(_Strict):
    """A prompt template given inline; ``{field}`` placeholders name record fields."""

    system: str | None = Field(None, description="System message, if the model has a chat template.")
    prompt: str = Field(description="User prompt, e.g. 'Review: {text}\\nSentiment:'.")
    completion: str = Field("{completion}", description="Target text, e.g. '{label}'.")


class TaskConfig(_Strict):
    """What the model should learn to do."""

    type: TaskType = Field("classification", description="The task family.")
    labels: list[str] | None = Field(None, description="Class names (classification).")
    template: str | InlineTemplate | None = Field(
        None, description="Template library name or an inline {system, prompt, completion}; default by task.")
    chat_template: bool = Field(True, description="Wrap prompts in the tokenizer's chat template when it has one.")
    head: bool | None = Field(
        None, description="Classification with a sequence-classification head instead of label scoring; "
                          "default: yes for encoders (no LM head) and regression, no for causal LMs.")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, template):
        from lmtune.data.templates import validate

        try:  # a broken placeholder is reported with the recipe's other problems, before any data is read
            validate(template)
        except UserError as exc:
            raise ValueError(exc.message) from None
        return template

    @model_validator(mode="after")
    def _labels_for_classification(self):
        if task_kind(self.type).labelled:
            if not self.labels or len(self.labels) < 2:
                raise ValueError("labels: classification needs at least two labels, e.g. [negative, positive]")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels: labels must be distinct")
        return self


class MethodConfig(_Strict):
    """How the weights are adapted."""

    name: str = Field("lora", description="A registered method: full, lora, ...")
    peft: dict[str, Any] = Field(default_factory=dict, description="Options passed to peft unchanged.")
    freeze: dict[str, Any] = Field(default_factory=dict, description="Full fine-tuning: parts to freeze.")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from lmtune.methods import registry

        if name not in registry.names():
            raise ValueError(f"unknown method {name!r}; choose from {registry.names()}")
        return name


class EarlyStopping(_Strict):
    patience: int = Field(3, ge=1, description="Evaluations without improvement before stopping.")
    metric: Literal["val_loss"] = Field("val_loss", description="What is watched.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as improvement.")


class ReplayConfig(_Strict):
    """General text mixed into the training data, against catastrophic forgetting."""

    data: str = Field(description="{\"text\"} records of general text (JSONL, CSV, Parquet).")
    ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of the training examples that are general text.")
    max_records: int | None = Field(None, gt=0, description="Read at most this many records.")


class TrainingConfig(_Strict):
    """The optimisation."""

    epochs: float = Field(2, gt=0, description="Passes over the training data (ignored if max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate of AdamW.")
    batch_size: int = Field(8, ge=1, description="Examples per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps with linear warm-up.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null to disable.")
    max_length: int = Field(512, ge=8, description="Tokens per example; truncation is counted and reported.")
    eval_every: int | None = Field(50, ge=1, description="Steps between validation evaluations.")
    save_every: int | None = Field(None, ge=1, description="Steps between checkpoints (default: eval_every).")
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept on disk.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when validation stops improving.")
    replay: ReplayConfig | None = Field(None, description="General data mixed into training against forgetting.")
    distill: DistillConfig | None = Field(None, description="Keep the base model's predictions on general text: "
                                          "{data, weight, temperature} (an adapter method).")
    self_training: SelfTrainingConfig | None = Field(
        None, description="Pseudo-label a pool with the fine-tuned model and train again: {pool, threshold, rounds, "
        "max_ratio}.")
    log_every: int = Field(5, ge=1, description="Steps between training-loss log lines.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision; auto = bf16 where the hardware has it natively, else fp32.")
    group_by_length: bool = Field(True, description="Batch examples of similar length (less padding).")
    packing: bool = Field(
        False, description="Pack each micro-batch into rows of max_length tokens, attention kept per example.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute layer activations in the backward pass: much less memory, ~1/3 more compute.")
    compile: bool = Field(
        False, description="torch.compile each decoder layer (a one-off compile before the first step).")
    dpo_beta: float = Field(
        0.1, gt=0, description="Preference task: DPO temperature (strength of the pull to the reference).")
    preference_loss: PreferenceLossConfig = Field(  # issue #20: IPO, SimPO, ORPO, KTO beside DPO
        default_factory=PreferenceLossConfig, description="Preference task: sigmoid (DPO), ipo, simpo, orpo or kto; "
        "or {type, beta, simpo_gamma, desirable_weight, undesirable_weight} (beta defaults to dpo_beta).")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="How several processes share the run (ddp, fsdp, deepspeed).")
    grpo: GRPOConfig | None = Field(None, description="task.type reward: GRPO from a grader's rewards, TRL's keys: "
                                    "{grader, num_generations, max_completion_length, beta, epsilon, ...} (issue #20).")


class Recipe(_Strict):
    """A whole fine-tuning experiment."""

    name: str = Field(description="Run name; the run directory is runs/<name>.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seeds data splits, shuffling and initialisation.")
    model: ModelConfig = Field(description="Alias, hub id, local directory or .gguf file; or {name, dtype}.")
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    search: SearchSpace = Field(None, description="lmtune tune: key path -> [choices] or {low, high, log, step}.")
    tracking: list[Tracker] = Field(default_factory=lambda: ["jsonl"], description=(
        "Where training metrics, parameters, results and the report are logged, any of jsonl (metrics.jsonl, always "
        "written), tensorboard, mlflow, wandb, trackio; all offline, each an extra: pip install 'lmtune[mlflow]'."))

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        # The run directory is runs/<name>: "." or "" would make it runs/ itself, which --overwrite deletes.
        if not RUN_NAME.fullmatch(name):
            raise ValueError(f"not a plain directory name (got {name!r}); use letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit, at most 100 characters (e.g. drug-review-sentiment)")
        return name

    @model_validator(mode="after")
    def _metrics_fit_task(self):
        from lmtune.evaluate.metrics import select_metrics
        from lmtune.evaluate.score import expand_metric_names

        if self.eval.metrics != "auto" and task_kind(self.task.type).per_example:
            try:
                self.eval.metrics = select_metrics(self.task.type, expand_metric_names(self.eval.metrics))
            except UserError as exc:
                raise ValueError(f"eval.metrics: {exc.message}") from None
        return self

    @model_validator(mode="after")
    def _method_fits_training(self):
        from lmtune.methods import registry
        from lmtune.methods.peft_base import PeftMethod

        if self.method.name not in registry.names():
            return self  # method.name reports it
        method = registry.get(self.method.name)
        if method.virtual_tokens and self.training.packing:
            raise ValueError("training.packing: packed rows cannot carry one soft prompt per example; "
                             f"set packing: false for {self.method.name}")
        if not method.checkpointing and self.training.gradient_checkpointing:
            raise ValueError("training.gradient_checkpointing: transformers drops the prefix key/values inside "
                             f"checkpointed layers; set it to false for {self.method.name}")
        if self.training.distill is not None and not isinstance(method, PeftMethod):  # issue #20: distill
            raise ValueError(ADAPTER_NEEDED.format(method=self.method.name))
        check_grpo(self, isinstance(method, PeftMethod))  # issue #20: task.type reward <-> training.grpo
        check_precision(self.model.dtype, self.training.precision, method.full_weights)
        return self

    @field_validator("tracking")
    @classmethod
    def _installed_trackers(cls, names: list[str]) -> list[str]:
        from lmtune.train.trackers import registry

        # Looked up, not imported: a tracker missing its library stops the run here, before anything slow.
        absent = registry.missing(names)
        if absent:
            raise ValueError("; ".join(registry.install_hint(tracker) for tracker in absent))
        return list(dict.fromkeys(names))


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe.

    Args:
        path: the YAML file.
        overrides: ``key.path=value`` strings; values are parsed as YAML (``1e-4``, ``[a, b]``, ``null``).

    Returns:
        The validated recipe with every default filled in.

    Raises:
        UserError: unreadable file, bad YAML, or any schema problem (all listed at once).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError("is a directory; give the path of a YAML recipe file", source=str(path))
    if not path.is_file():
        raise UserError("no such recipe file; give the path of a YAML recipe", source=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read the recipe ({exc.strerror})", source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=where) from None
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text; save the recipe as UTF-8", source=str(path)) from None
    if not isinstance(raw, dict):
        raise UserError("a recipe is a YAML mapping (name:, model:, task:, data:, ...)", source=str(path))
    for item in overrides:
        apply_override(raw, item)
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a plain dict as a recipe, reporting every problem with its key path."""
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = [(_key_path(err), _describe(err)) for err in exc.errors()]
        raise UserError(problems[0][1], source=problems[0][0], problems=problems) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` inside a nested dict (the ``--set`` flag)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError("expected key.path=value, e.g. training.max_steps=20", source=f"--set {item}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if node is raw and part == "model" and isinstance(child, str):  # model: <ref> is short for {name: <ref>}
            child = node[part] = {"name": child}
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{part!r} is not a section, cannot set a key inside it", source=key)
        node = child
    node[parts[-1]] = parsed


def _key_path(err: dict[str, Any]) -> str:
    parts = [str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")]
    # Model validators say 'labels: ...'; that leading key belongs in the path.
    head, sep, _ = err.get("msg", "").removeprefix("Value error, ").partition(":")
    if err.get("type") == "value_error" and sep and head and " " not in head:
        parts += head.split(".")
    return ".".join(parts) or "recipe"


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = err.get("msg", "invalid value")
    if kind == "extra_forbidden":
        loc = [p for p in err.get("loc", ()) if not str(p).startswith("function-")]
        valid = _valid_keys(loc[:-1])
        listed = f"; valid keys here: {', '.join(valid)}" if valid else ""
        return f"unknown key {str(loc[-1]) if loc else ''!r}{listed} (see \"Recipes\" in README.md)"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        head, _, rest = text.partition(":")
        return rest.strip() if rest and " " not in head else text
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"{msg[0].lower()}{msg[1:]} (got {shown})"


def _valid_keys(loc: list) -> list[str]:
    """The keys of the recipe section at ``loc`` (``["data", "split"]``), in schema order; [] if unknown.

    pydantic names a union member in the path (``InlineTemplate``) and list positions as numbers;
    both are followed, so the listing fits the section the unknown key was found in.
    """
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None:
            return []
        if part in model.model_fields:
            model = _section_model(model.model_fields[part].annotation)
        elif not (isinstance(part, int) or part == model.__name__):
            return []
    return list(model.model_fields) if model is not None else []


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The recipe section class inside a field's type (``X``, ``X | None``, ``list[X]``, ``str | X``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None
