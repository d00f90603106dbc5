"""Models with a sequence-classification or regression head: encoding, prediction, and the
baseline such a model must beat (the majority class, or the mean of the training targets).

An encoder such as ``minilm-l6`` cannot be prompted, so it has no zero-shot system; the honest
yardstick is what a constant predictor scores (scikit-learn's ``DummyClassifier`` /
``DummyRegressor``, fitted on the training labels).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from lmtune import precision
from lmtune.data.formats import Example
from lmtune.errors import UserError
from lmtune.evaluate import metrics
from lmtune.evaluate.systems import SystemResult, TaskSpec
from lmtune.models import pad_id
from lmtune.train.objectives import HeadObjective, Labelled


def encode(tokenizer, examples: list[Example], spec: TaskSpec, max_length: int) -> list[Labelled]:
    """Tokenize each record's text (no prompt template: the head reads the text itself)."""
    out = []
    for ex in examples:
        if "text" not in ex.record:
            raise UserError(f"a {spec.type} head reads {{\"text\", \"label\"}} records; this one is "
                            f"{ex.format}", source=ex.source)
        ids = tokenizer(ex.record["text"], truncation=False)["input_ids"]
        out.append(Labelled(ids[:max_length], target(ex, spec), len(ids) > max_length))
    return out


def target(ex: Example, spec: TaskSpec) -> int | float:
    """The class index, or the number, a record's label stands for."""
    label = ex.record["label"]
    return float(label) if spec.kind.numeric else spec.labels.index(label)


@torch.no_grad()
def predict(model, examples: list[Labelled], pad_id: int, spec: TaskSpec) -> list[list[float]]:
    """Head outputs (class logits, or one value) per example, batched longest first."""
    model.eval()
    device = next(model.parameters()).device
    collate = HeadObjective(spec.kind.numeric).collate
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    out: list[list[float]] = [[] for _ in examples]
    with precision.autocast(device, spec.precision):
        for start in range(0, len(order), spec.batch_size):
            idx = order[start:start + spec.batch_size]
            batch = collate([examples[i] for i in idx], pad_id)
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits.float()
            for i, row in zip(idx, logits.tolist()):
                out[i] = row
    return out


def run_head(model, tokenizer, examples: list[Labelled], test: list[Example], spec: TaskSpec) -> SystemResult:
    """Evaluate a head model on the encoded test examples."""
    pad = pad_id(tokenizer)
    started = time.perf_counter()
    outputs = predict(model, examples, pad, spec)
    if spec.kind.numeric:
        predictions: list[Any] = [row[0] for row in outputs]
        extra = [{} for _ in outputs]
    else:
        predictions = [spec.labels[max(range(len(row)), key=row.__getitem__)] for row in outputs]
        extra = [{"scores": dict(zip(spec.labels, (round(s, 4) for s in row)))} for row in outputs]
    result = _score(test, predictions, spec)
    elapsed = time.perf_counter() - started
    result.update(latency_s=elapsed / max(len(test), 1),
                  prompt_tokens_mean=sum(len(e.input_ids) for e in examples) / max(len(examples), 1),
                  completion_tokens_mean=0.0, truncated_prompts=sum(e.truncated for e in examples))
    return SystemResult(result, _rows(test, predictions, extra))


def constant_baseline(train: list[Example], test: list[Example], spec: TaskSpec) -> SystemResult:
    """Always the training set's most frequent class (classification) or mean target (regression)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    y = [ex.record["label"] for ex in train]
    dummy = DummyRegressor(strategy="mean") if spec.kind.numeric else DummyClassifier(strategy="most_frequent")
    dummy.fit([[0]] * len(y), y)
    predictions = [p.item() if hasattr(p, "item") else p for p in dummy.predict([[0]] * len(test))]
    result = _score(test, predictions, spec)
    result.update(latency_s=0.0, prompt_tokens_mean=0.0, completion_tokens_mean=0.0)
    return SystemResult(result, _rows(test, predictions, [{} for _ in test]))


def _score(test: list[Example], predictions: list[Any], spec: TaskSpec) -> dict[str, Any]:
    references = [ex.record["label"] for ex in test]
    if spec.kind.numeric:
        return metrics.regression_metrics([float(r) for r in references], [float(p) for p in predictions])
    return metrics.classification_metrics(references, [str(p) for p in predictions], spec.labels)


def _rows(test: list[Example], predictions: list[Any], extra: list[dict]) -> list[dict[str, Any]]:
    return [{"input": ex.record["text"], "reference": ex.record["label"], "prediction": p, **more}
            for ex, p, more in zip(test, predictions, extra)]
