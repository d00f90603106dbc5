"""``lmtune predict RUN_OR_MODEL --input F --output F``: batch inference over a JSONL file.

Each input line gets one output line: the input record plus ``prediction`` (and ``reference``
when the record carries the expected reply). The prompt is built as training built it: chat
records (``{"messages"}``) through the run's chat template; other records through the run's
prompt template and column mapping (so a held-out file of the training format works as is); a
plain ``{"prompt"}`` (that the template cannot fill) as one user message. A classification run
answers with a label by evaluation's label scoring (never free text), and ``label_probabilities``
(softmax of the label log-likelihoods), as its task model in ``lmtune serve`` does. Lines are appended in
chunks and flushed to disk; a second call with the same output skips the lines already written, so
an interrupted job resumes. A line already in the output that is not the prediction of the input
record at its place stops the job (``output:line``) rather than being counted as done.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lmtune import outputs, progress
from lmtune.data import io
from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.templates import TEMPLATES, Template, render, resolve
from lmtune.errors import UserError
from lmtune.kinds.tasks import find as find_task
from lmtune.models import pad_id
from lmtune.run_dir import RunDir, read_model_info, run_final


def predict_file(ref: str, input_path: Path, output_path: Path, max_tokens: int = 256, batch_size: int = 8,
                 temperature: float = 0.0, quiet: bool = False) -> dict[str, Any]:
    """Write a prediction for every input record not yet in ``output_path``; return counts and speed.

    Args:
        ref: a run directory of ``lmtune train`` or a model (alias, directory).
        input_path: JSONL records.
        output_path: JSONL predictions, appended to (created if missing).
        max_tokens: most tokens generated per record.
        batch_size: records generated together.
        temperature: 0 for greedy decoding, else sampling temperature.
        quiet: no progress bar.

    Raises:
        UserError: unreadable input, a record that gives no prompt, or an output longer than the input.
    """
    if not Path(input_path).exists():
        raise UserError("no such input file; check the --input path", source=str(input_path))
    outputs.check_file_target(Path(output_path), "--output")
    rows = io.read_rows(input_path)
    done = _done_lines(Path(output_path), rows)
    todo = rows[done:]
    if not todo:
        return {"written": 0, "skipped": done, "total": len(rows), "generated_tokens": 0, "seconds": 0.0,
                "tokens_per_s": None}
    final = _run_final(ref)
    prompter = prompter_for(final)
    if prompter.classifies and temperature > 0:
        raise UserError("a classification run answers by label scoring, which does not sample; leave --temperature "
                        "at 0", source="--temperature")
    prompts = [prompter(record, source) for source, record in todo]  # every bad record fails before loading
    model, tokenizer = _load_model(ref, final)
    encoder = Encoder(tokenizer, _context(model), use_chat_template=prompter.chat)
    ids = [encoder.prompt_ids(p["messages"]) for p in prompts]
    pad = pad_id(tokenizer)
    label_ids = [encoder.target_ids(label) for label in prompter.labels] if prompter.classifies else []
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
    bar = progress.bar(len(rows), "predict", "rec", quiet=quiet, initial=done)
    started = time.perf_counter()
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    tokens = 0
    for lines, n_tokens in _answered_lines(model, tokenizer, todo, prompts, ids, prompter, label_ids,
                                                  max_tokens, pad, batch_size, sampling):
        with open(output_path, "a", encoding="utf-8") as out:
            out.write("".join(lines))  # whole lines in one write; a crash leaves at most one partial line
            out.flush()
            os.fsync(out.fileno())
        tokens += n_tokens
        bar.update(len(lines))
    bar.close()
    seconds = time.perf_counter() - started
    return {"written": len(todo), "skipped": done, "total": len(rows), "generated_tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None}


def _answered_lines(model, tokenizer, todo, prompts, ids, prompter, label_ids, max_tokens, pad, batch_size,
                    sampling):
    """Yield (output lines, generated tokens) for each chunk of records, the adapter merged meanwhile."""
    from lmtune.methods.merge import merged_adapter

    chunk = batch_size * 4
    with merged_adapter(model):
        for start in range(0, len(todo), chunk):
            part = prompts[start:start + chunk]
            texts, counts, more = _answers(model, tokenizer, ids[start:start + chunk], prompter.labels, label_ids,
                                           max_tokens, pad, batch_size, sampling)
            lines = []
            for (_, record), prompt, text, scored in zip(todo[start:start + chunk], part, texts, more):
                extra = {"reference": prompt["reference"]} if prompt["reference"] is not None else {}
                lines.append(json.dumps({**record, **extra, "prediction": text, **scored}, ensure_ascii=False) + "\n")
            yield lines, sum(counts)


def _answers(model, tokenizer, ids: list[list[int]], labels: list[str] | None, label_ids: list[list[int]],
             max_tokens: int, pad: int, batch_size: int,
             sampling: dict[str, Any]) -> tuple[list[str], list[int], list[dict[str, Any]]]:
    """(answers, their token counts, more output fields) of one chunk of prompts.

    A classification run (``label_ids``) is answered by evaluation's label scoring: a label and
    ``label_probabilities`` per prompt; anything else by generation.
    """
    import math

    from lmtune.inference.generation import generate
    from lmtune.inference.label_scoring import classify, log_probabilities

    if not label_ids:
        texts, counts = generate(model, tokenizer, ids, max_tokens, pad, batch_size, quiet=True, **sampling)
        return texts, counts, [{} for _ in texts]
    best, scores = classify(model, ids, label_ids, pad, batch_size, quiet=True)
    more = [{"label_probabilities": {label: math.exp(lp) for label, lp in zip(labels, log_probabilities(row))}}
            for row in scores]
    return [labels[i] for i in best], [len(label_ids[i]) for i in best], more


def _done_lines(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> int:
    """How many input records ``path`` already holds predictions for (a resumed job skips them).

    A partial last line (from a crash) is cut off so it is written again. Every complete line must be
    the prediction of the input record at its position; anything else is an error, never counted as
    done, since skipping records on the strength of a line we did not write would lose them silently.

    Raises:
        UserError: naming ``output:line``, for a line that is not JSON, not an object with a
            ``"prediction"``, or the prediction of another record; or more lines than input records.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode("utf-8", errors="replace").split("\n")[:-1]
    if len(lines) > len(rows):
        raise UserError(f"has {len(lines)} lines but the input has only {len(rows)} records; is it the output "
                        "of another input file? Choose a new --output", source=str(path))
    for number, (line, (_, record)) in enumerate(zip(lines, rows), start=1):
        _check_done_line(f"{path}:{number}", line, record, number)
    if end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
    return len(lines)


def _check_done_line(where: str, line: str, record: dict[str, Any], number: int) -> None:
    """One line of an existing output: the prediction of input record ``number``, or a UserError."""
    fix = "remove it, or choose a new --output"
    if not line.strip():
        raise UserError(f"blank line; lmtune predict writes none: {fix}", source=where)
    try:
        written = json.loads(line)
    except ValueError:
        raise UserError(f"not valid JSON, so not a prediction lmtune wrote: {fix}", source=where) from None
    if not isinstance(written, dict) or not isinstance(written.get("prediction"), str):
        raise UserError(f'no "prediction" text, so not a prediction lmtune wrote: {fix}', source=where)
    # Output lines carry the input record's fields ("reference" may be added from the record's reply).
    differs = next((k for k, v in record.items() if k != "reference" and _same(written, k) != _same(record, k)),
                   None)
    if differs is not None:
        raise UserError(f"does not match input record {number} (field {differs!r} differs); is it the output "
                        "of another input file? Choose a new --output", source=where)


def _same(record: dict[str, Any], key: str) -> str | None:
    """A field as JSON text, so values compare as written (NaN equals NaN); None when absent."""
    return json.dumps(record[key], sort_keys=True, default=str) if key in record else None


def _run_final(ref: str) -> Path | None:
    """The run's ``final/`` (None for a model reference); a head-only run cannot generate."""
    final = run_final(ref)
    if final is not None and read_model_info(final).get("head"):
        raise UserError("this run trained a classification/regression head, which does not generate text; "
                        "use lmtune eval for its predictions", source=str(final.parent))
    return final


def prompter_for(final: Path | None) -> Prompter:
    """How records become messages: the run's template, column mapping and chat setting (none for a model)."""
    if final is None:
        return Prompter(None, {}, None, True)
    info = read_model_info(final)
    run = RunDir(final.parent)
    recipe = run.read_recipe() if run.recipe.exists() else {}
    task = recipe.get("task") or info.get("task", {})
    return Prompter(_template(task.get("template")), (recipe.get("data") or {}).get("fields") or {},
                    task.get("labels"), task.get("chat_template", True), task.get("type"))


def _load_model(ref: str, final: Path | None):
    """(model, tokenizer): the run's fine-tuned model with its saved tokenizer, or the model ``ref``."""
    if final is None:
        from lmtune import models

        model, tokenizer, _ = models.load_causal_lm(ref)
        return model, tokenizer
    from lmtune.export import load_final

    model, tokenizer = load_final(final)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class Prompter:
    """Turns one input record into chat messages (and its reference reply, if it has one)."""

    def __init__(self, template: Template | None, fields: dict[str, str], labels: list[str] | None, chat: bool,
                 task_type: str | None = None):
        self.template, self.fields, self.labels, self.chat = template, fields, labels, chat
        self.task_type = task_type

    @property
    def classifies(self) -> bool:
        """A classification run: records are answered with one of its labels, by label scoring."""
        return bool(getattr(find_task(self.task_type), "labelled", False) and self.labels)

    def __call__(self, record: dict[str, Any], source: str) -> dict[str, Any]:
        reference = None
        if isinstance(record.get("messages"), list) and record["messages"]:
            messages = [{"role": m.get("role"), "content": m.get("content")} for m in record["messages"]
                        if isinstance(m, dict)]
            if any(not isinstance(m["content"], str) for m in messages):  # never the text "None" or a dict's repr
                raise UserError('every message needs a "content" string', source=source)
            if messages and messages[-1]["role"] == "assistant":
                reference = messages.pop()["content"]
        elif self.template is not None or "instruction" in record:
            messages, reference = self._templated(record, source)
        elif isinstance(record.get("prompt"), str):
            messages = [{"role": "user", "content": record["prompt"]}]
        else:
            raise UserError('record gives no prompt: use {"messages": [...]} or {"prompt": "..."}', source=source)
        if not messages:
            raise UserError('"messages" is empty; give at least one message', source=source)
        return {"messages": messages, "reference": reference}

    def _templated(self, record: dict[str, Any], source: str) -> tuple[list[dict[str, str]], Any]:
        """Messages through the run's prompt template; a plain ``{"prompt"}`` it cannot fill is sent as is."""
        template = self.template or TEMPLATES["instruction"]
        mapped = {**record, **{k: record[c] for k, c in self.fields.items() if c in record}}
        prompt_only = Template(prompt=template.prompt, completion="", system=template.system)
        try:
            messages = render(prompt_only, Example(mapped, source, "record"), self.labels).messages
        except (KeyError, UserError) as exc:  # a field the template needs is missing (or not text)
            # A {"prompt"} record is a finished prompt (as `lmtune predict --help` promises), not the
            # run's training format: send it as one user message, as for a plain model.
            if isinstance(record.get("prompt"), str):
                return [{"role": "user", "content": record["prompt"]}], None
            if isinstance(exc, UserError):
                raise
            raise UserError(f"record has no field {exc.args[0]!r}, which the run's prompt template needs "
                            f"(record keys: {sorted(record)})", source=source) from None
        target = self.fields.get("label", "label")
        return messages, next((record[k] for k in (target, "completion", "output") if k in record), None)


def _template(spec) -> Template | None:
    """The run's named or inline prompt template (None: records carry their own structure, or a default)."""
    return None if spec is None else resolve(spec, "record")


def _context(model) -> int:
    return getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
