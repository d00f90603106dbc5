"""Continuous batching: one thread owns a model and decodes every running request together.

Request handlers put sequences (one per requested choice) in a bounded waiting list and get their
text through a callback; a full list raises ``QueueFull`` (HTTP 429). Between two decoding steps
the engine thread drops finished or cancelled rows, admits waiting sequences (prefilled together,
then merged into the running KV cache) and runs queued calls such as loading an adapter, so the
model is only ever touched from this one thread and no request waits behind a lock for another
to finish.

A failure fails only the rows it belongs to: sampling and taking a token are per row, a failed
prefill is bisected down to the prompts that fail alone, and after a failed decoding step the rows
are re-encoded from their prompt and reply so far (see ``Engine._step``). Tracebacks go to stderr.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from lmtune import precision
from lmtune.serve.engine import decode
from lmtune.serve.engine.text import StopText

BASE = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


class QueueFull(Exception):
    """The waiting list is full: the client should retry later (HTTP 429)."""


@dataclass(eq=False)
class Sequence:
    """One reply being generated: what to generate and where its text goes.

    ``emit(kind, data)`` is called from the engine thread with ``("delta", {"text"})``, then once
    ``("done", {"finish_reason", "completion_tokens"})`` or ``("error", {"message"})``.
    """

    prompt: list[int]
    max_tokens: int
    text: StopText
    emit: Callable[[str, dict], None]
    eos: frozenset[int]
    adapter: str = BASE
    temperature: float = 1.0
    top_p: float = 1.0
    generator: torch.Generator = field(default_factory=torch.Generator)
    cancelled: bool = False
    generated: int = 0
    finished: bool = False


class Engine:
    """A model, its adapters, and the thread that decodes all of its requests in one batch.

    Args:
        model: a causal LM, or a peft model whose adapters the requests choose between.
        pad_id: token id used for left padding (masked out).
        context_length: most tokens (prompt + reply) one row may hold.
        max_batch: most rows decoded together.
        max_queue: most sequences waiting to start; more raise ``QueueFull``.
        observe_batch: called with the row count of every decoding step (for metrics).
        precision_choice: ``auto`` (bf16 autocast where the hardware has it natively), ``fp32``, ``bf16``, ``fp16``.
    """

    def __init__(self, model, pad_id: int, context_length: int, max_batch: int = 32, max_queue: int = 256,
                 observe_batch: Callable[[int], None] | None = None, precision_choice: str = "auto"):
        self.model = model.eval()
        self.pad_id = pad_id
        self.context_length = context_length
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.observe_batch = observe_batch or (lambda n: None)
        self.device = next(model.parameters()).device
        self.precision = precision.resolve(precision_choice, self.device)
        self.merge_ok = True  # rows may join a running batch (false for sliding-window caches)
        self.active = 0
        self._failed_steps = 0  # consecutive failed decoding steps (a rebuilt batch gets one more try)
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._calls: list[tuple[Callable, concurrent.futures.Future]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="lmtune-engine", daemon=True)

    # ------------------------------------------------------------------ used by other threads

    def start(self) -> Engine:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish: every waiting and running sequence gets an error; the thread ends."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, sequences: list[Sequence]) -> None:
        """Queue sequences for generation; all of them or none.

        Raises:
            QueueFull: the waiting list has no room for them.
        """
        with self._cond:
            if self._stopping or len(self._waiting) + len(sequences) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} sequences are waiting (limit {self.max_queue})")
            self._waiting.extend(sequences)
            self._cond.notify_all()

    def call(self, fn: Callable[[Engine], object]) -> concurrent.futures.Future:
        """Run ``fn(engine)`` in the engine thread between two steps (e.g. to load an adapter)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:  # the thread will not run it: fail now rather than leave the caller waiting
                future.set_exception(RuntimeError("the server is shutting down"))
                return future
            self._calls.append((fn, future))
            self._cond.notify_all()
        return future

    # ------------------------------------------------------------------ adapters

    @property
    def adapters(self) -> dict:
        """peft configs by adapter name ({} for a plain model)."""
        return getattr(self.model, "peft_config", {})

    @property
    def peft_type(self) -> str | None:
        """The peft tuner type of the loaded adapters (one type per peft model), or None."""
        return next((tuner_type(c) for c in self.adapters.values()), None)

    @property
    def mixable(self) -> bool:
        """peft runs rows of different LoRA adapters (and the base) in one forward; not DoRA or other tuners."""
        return all(tuner_type(c) == "LORA" and not getattr(c, "use_dora", False) for c in self.adapters.values())

    def load_adapter(self, name: str, path) -> None:
        """Add a saved peft adapter under ``name`` (call through :meth:`call`)."""
        from peft import PeftModel

        if self.adapters:
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()

    def _forward(self, adapters: list[str]):
        model = self.model
        if not self.adapters:
            return model
        if self.mixable:
            return lambda **kw: model(**kw, adapter_names=adapters)
        name = adapters[0]  # admission keeps one adapter per batch here
        if name == BASE:
            def base(**kw):
                with model.disable_adapter():
                    return model(**kw)
            return base
        if model.active_adapter != name:
            model.set_adapter(name)
        return model

    # ------------------------------------------------------------------ the engine thread

    def _loop(self) -> None:
        rows: list[Sequence] = []
        batch: decode.Batch | None = None
        with torch.inference_mode(), precision.autocast(self.device, self.precision):
            while True:
                self._run_calls()
                new = self._admit(rows)
                if new is None:
                    break
                if new:
                    rows, batch = self._join(rows, batch, new)
                if rows:
                    rows, batch = self._step(rows, batch)
                self.active = len(rows)
        for seq in rows + list(self._waiting):
            _finish(seq, "error", {"message": "the server is shutting down"})
        with self._cond:
            calls, self._calls = self._calls, []
        for _, future in calls:
            future.set_exception(RuntimeError("the server is shutting down"))

    def _run_calls(self) -> None:
        with self._cond:
            calls, self._calls = self._calls, []
        for fn, future in calls:
            try:
                future.set_result(fn(self))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

    def _admit(self, rows: list[Sequence]) -> list[Sequence] | None:
        """Waiting sequences that may join the running rows now ([] if none; None when stopping)."""
        with self._cond:
            while not rows and not self._waiting and not self._calls and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            while self._waiting and self._waiting[0].cancelled:
                _finish(self._waiting.popleft(), "done", {"finish_reason": "cancelled", "completion_tokens": 0})
            room = self.max_batch - len(rows)
            if not self._waiting or room <= 0 or (rows and not self.merge_ok):
                return []
            # Without mixed-adapter batches, rows share one adapter; when the oldest waiting sequence
            # needs another one, the batch drains first so that adapter is next.
            adapter = None if self.mixable else (rows[0].adapter if rows else self._waiting[0].adapter)
            if adapter is not None and self._waiting[0].adapter != adapter:
                return []
            taken = [s for s in self._waiting if not s.cancelled and adapter in (None, s.adapter)][:room]
            chosen = set(map(id, taken))
            self._waiting = collections.deque(s for s in self._waiting if id(s) not in chosen)
            return taken

    def _join(self, rows: list[Sequence], batch, new: list[Sequence]) -> tuple[list[Sequence], decode.Batch | None]:
        """Prefill ``new`` and merge it into the running batch; a failure here fails new rows only."""
        try:
            joined, fresh = self._prefill(new)
            if fresh is None:
                return rows, batch
            return rows + joined, fresh if batch is None else decode.merge(batch, fresh)
        except Exception as exc:  # the running batch is untouched until merge returns: it goes on
            _log_failure("admitting new requests")
            for seq in new:
                _fail(seq, exc)
            return rows, batch

    def _step(self, rows: list[Sequence], batch: decode.Batch) -> tuple[list[Sequence], decode.Batch | None]:
        """One decoding step for every running row.

        A failed step is not one row's doing (each row's input went through a forward at prefill): the
        rows are re-encoded from their prompt and reply so far (rows failing alone fail) and go on.
        A rebuilt batch whose next step fails again fails all its rows rather than looping.
        """
        try:
            self.observe_batch(len(rows))
            logits = decode.step(self._forward([s.adapter for s in rows]), batch)
            self._take(rows, batch, logits)
            self._failed_steps = 0
            return self._drop_finished(rows, batch)
        except Exception as exc:
            _log_failure("a decoding step")
            live = [s for s in rows if not _done(s)]
            self._failed_steps += 1
            if self._failed_steps > 1:
                for seq in live:
                    _fail(seq, exc)
                self._failed_steps = 0
                return [], None
            return self._rebuild(live)

    def _prefill(self, new: list[Sequence]) -> tuple[list[Sequence], decode.Batch | None]:
        """Encode new prompts and sample their first tokens; return the rows still going and their batch."""
        new, fresh, logits = self._encode(new, [s.prompt for s in new])
        if fresh is None:
            return [], None
        if not decode.can_merge(fresh.cache):
            self.merge_ok = False
        self._take(new, fresh, logits)
        keep = [i for i, s in enumerate(new) if not _done(s)]
        if not keep:
            return [], None
        return [new[i] for i in keep], decode.select(fresh, keep, trim=self.merge_ok) if len(keep) < len(new) else fresh

    def _rebuild(self, rows: list[Sequence]) -> tuple[list[Sequence], decode.Batch | None]:
        """A fresh batch holding ``rows`` as they were: prompt and reply so far in the cache, newest token next."""
        # ``text.tokens`` is every token taken so far; the newest is fed by the next step, as in a live batch.
        kept, fresh, _ = self._encode(rows, [s.prompt + s.text.tokens[:-1] for s in rows])
        if fresh is None:
            return [], None
        fresh.last = torch.tensor([s.text.tokens[-1] for s in kept], device=self.device)
        return kept, fresh

    def _encode(self, seqs: list[Sequence], prompts: list[list[int]]):
        """Prefill ``prompts`` together: (sequences encoded, their batch, logits), batch None if none could be.

        A failed forward is bisected: each half is encoded on its own and the halves merged, so a
        row that fails alone fails, and its neighbours (or a batch too big for memory) go on.
        """
        if not seqs:
            return [], None, None
        try:
            return (seqs, *self._prefill_forward(seqs, prompts))
        except Exception as exc:
            _log_failure(f"prefilling {len(seqs)} sequence(s)")
            if len(seqs) == 1:
                _fail(seqs[0], exc)
                return [], None, None
        half = len(seqs) // 2
        first, second = self._encode(seqs[:half], prompts[:half]), self._encode(seqs[half:], prompts[half:])
        if first[1] is None or second[1] is None:
            return second if first[1] is None else first
        if decode.can_merge(first[1].cache):
            return first[0] + second[0], decode.merge(first[1], second[1]), torch.cat([first[2], second[2]])
        # Sliding-window caches cannot be joined: new sequences wait for the next batch; running ones fail.
        with self._cond:
            for seq in reversed(second[0]):
                if seq.generated:
                    _finish(seq, "error", {"message": "generation failed: the batch could not be rebuilt"})
                else:
                    self._waiting.appendleft(seq)
        return first

    def _prefill_forward(self, seqs: list[Sequence], prompts: list[list[int]]):
        cache = DynamicCache(config=self.model.config)
        return decode.prefill(self._forward([s.adapter for s in seqs]), prompts, self.pad_id, self.device, cache)

    def _take(self, rows: list[Sequence], batch: decode.Batch, logits: torch.Tensor) -> None:
        """Sample each row's next token and advance it; a row that cannot be sampled or advanced fails alone."""
        # decode.sample decides every row on its own and gives None for a row it cannot sample.
        tokens = decode.sample(logits, [s.temperature for s in rows], [s.top_p for s in rows],
                               [s.generator for s in rows])
        batch.last = torch.tensor([self.pad_id if t is None else t for t in tokens], device=self.device)
        for seq, token in zip(rows, tokens):
            try:
                if token is None:
                    raise FloatingPointError("the model produced no finite logits for this request")
                self._advance(seq, token)
            except Exception as exc:  # e.g. the tokenizer cannot decode the token: this row only
                _log_failure("taking a token")
                _fail(seq, exc)

    def _advance(self, seq: Sequence, token: int) -> None:
        """Take one sampled token: send its text, and finish on EOS, a stop string, or the length limit."""
        if _done(seq):
            return
        seq.generated += 1
        if token in seq.eos:
            _send(seq, seq.text.flush())
            _finish(seq, "done", {"finish_reason": "stop", "completion_tokens": seq.generated})
            return
        delta, stopped = seq.text.add(token)
        _send(seq, delta)
        if stopped:
            _finish(seq, "done", {"finish_reason": "stop", "completion_tokens": seq.generated})
        elif seq.generated >= seq.max_tokens or len(seq.prompt) + seq.generated >= self.context_length:
            _send(seq, seq.text.flush())
            _finish(seq, "done", {"finish_reason": "length", "completion_tokens": seq.generated})

    def _drop_finished(self, rows: list[Sequence], batch):
        for seq in rows:
            if seq.cancelled and not _done(seq):
                _finish(seq, "done", {"finish_reason": "cancelled", "completion_tokens": seq.generated})
        keep = [i for i, s in enumerate(rows) if not _done(s)]
        if not keep:
            return [], None
        if len(keep) == len(rows):
            return rows, batch
        return [rows[i] for i in keep], decode.select(batch, keep, trim=self.merge_ok)


def tuner_type(config) -> str:
    """``LORA``, ``IA3``, ... of a peft config."""
    return str(getattr(config.peft_type, "value", config.peft_type))


def _log_failure(what: str) -> None:
    """An internal failure: its traceback goes to the server log (the request gets a one-line error)."""
    print(f"lmtune engine: {what} failed:", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)


def _fail(seq: Sequence, exc: BaseException) -> None:
    _finish(seq, "error", {"message": f"generation failed: {type(exc).__name__}: {exc}"})


def _done(seq: Sequence) -> bool:
    return seq.finished


def _send(seq: Sequence, text: str) -> None:
    if text:
        _emit(seq, "delta", {"text": text})


def _finish(seq: Sequence, kind: str, data: dict) -> None:
    if not seq.finished:
        seq.finished = True
        _emit(seq, kind, data)


def _emit(seq: Sequence, kind: str, data: dict) -> None:
    with contextlib.suppress(RuntimeError):  # the request's event loop is gone (server shutting down)
        seq.emit(kind, data)
