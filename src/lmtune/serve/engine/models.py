"""What the server serves: base models and fine-tuned runs, by the name a request's ``model`` gives.

Adapters of one tuner type (LoRA and DoRA, or IA3) trained on the same base share one copy of that
base in one engine: the base is loaded once and each run's adapter is added with peft's
``load_adapter``. A run is served under its directory name, its base under the base's name (the
alias, or the directory name of a local model). Full fine-tunes and lmtune's bottleneck adapters
are whole models and get an engine of their own. A run trained on templated records is also served
as ``<run>:task``, which takes the raw input and answers as evaluation did (see :mod:`.task`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmtune import models
from lmtune.assets import resolve_model
from lmtune.data.encode import Encoder
from lmtune.errors import UserError
from lmtune.methods import registry
from lmtune.models import pad_id
from lmtune.run_dir import MODEL_INFO, read_model_info, run_final, run_of
from lmtune.serve.engine.batching import BASE, Engine
from lmtune.serve.engine.task import Task, load_task, task_name


@dataclass
class Served:
    """One name a client can ask for."""

    name: str
    engine: Engine
    adapter: str  # the peft adapter name in the engine, or BASE
    tokenizer: object
    encoder: Encoder
    created: int
    source: str  # the model reference of a base, the run directory of a run
    kind: str = "run"  # "base", "run", or "task" (a run answering as evaluated)
    task: Task | None = None  # what a "task" name does with the raw input

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    @property
    def eos(self) -> frozenset[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.engine.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return frozenset(i for i in ids if i is not None)


def base_name(ref: str) -> str:
    """The name a base model is served under: an alias or hub id as given, a local directory's name."""
    path = Path(ref).expanduser()
    return path.name if path.exists() else ref


class Registry:
    """Served models by name, and the engines behind them.

    Args:
        max_batch / max_queue: passed to every engine.
        observe_batch: metrics hook passed to every engine.
        say: prints a progress line (model loading takes a while).
        precision: the engines' autocast choice (see :class:`Engine`).
    """

    def __init__(self, max_batch: int = 32, max_queue: int = 256,
                 observe_batch: Callable[[int], None] | None = None, say: Callable[[str], None] = lambda m: None,
                 precision: str = "auto"):
        self.max_batch, self.max_queue, self.observe_batch, self.say = max_batch, max_queue, observe_batch, say
        self.precision = precision
        self._served: dict[str, Served] = {}
        self._engines: dict[str, list[tuple[Engine, object]]] = {}  # shared-base (engine, tokenizer) by base
        self._started: list[Engine] = []  # every engine, to stop them all
        self._lock = threading.RLock()
        self._adapters = 0

    def get(self, name: str) -> Served | None:
        return self._served.get(name)

    def names(self) -> list[str]:
        return list(self._served)

    def all(self) -> list[Served]:
        return list(self._served.values())

    def engines(self) -> list[Engine]:
        return list({id(s.engine): s.engine for s in self._served.values()}.values())

    def add(self, ref: str, name: str | None = None) -> list[str]:
        """Serve a run directory or a base model reference; return the names it added.

        Raises:
            UserError: not a servable run or model, or a name already taken.
        """
        with self._lock:
            final = run_final(ref)
            if final is None:
                if name is None and base_name(ref) in self._served:
                    return []
                return self._add_base(ref, name)
            return self._add_run(final, name or run_of(final).path.name)

    def close(self) -> None:
        for engine in self._started:
            engine.stop()

    def _add_base(self, ref: str, name: str | None) -> list[str]:
        engine, tokenizer = self._shared_engine(ref, None)
        name = name or base_name(ref)
        self._claim(name, ref)
        self._served[name] = Served(name, engine, BASE, tokenizer, _encoder(tokenizer, engine, True),
                                    int(time.time()), ref, "base")
        return [name]

    def _add_run(self, final: Path, name: str) -> list[str]:
        info = read_model_info(final)
        method = info.get("method", "")
        where = str(final.parent)
        capabilities = registry.get(method)
        if info.get("head"):
            raise UserError("this run trained a classification/regression head, which does not generate text; "
                            "evaluate it with lmtune eval instead", source=where)
        if capabilities.virtual_tokens:
            raise UserError(f"{method} runs cannot be served (their virtual tokens do not fit a shared KV cache); "
                            "use lmtune predict for batch inference", source=where)
        self._claim(name, where)
        tokenizer = _run_tokenizer(final)
        chat = info.get("task", {}).get("chat_template", True)
        added = []
        if capabilities.shares_base:
            kind = json.loads((final / "adapter_config.json").read_text()).get("peft_type")
            engine, base_tok = self._shared_engine(info["base_model"], kind)
            base = base_name(info["base_model"])
            if base not in self._served:
                self._served[base] = Served(base, engine, BASE, base_tok, _encoder(base_tok, engine, True),
                                            int(time.time()), info["base_model"], "base")
                added.append(base)
            self._adapters += 1
            adapter = f"adapter{self._adapters}"  # peft module keys cannot hold the '.' or ':' of served names
            self.say(f"adding {method} adapter {name}")
            engine.call(lambda e: e.load_adapter(adapter, final)).result()
        else:
            from lmtune.export import load_final

            self.say(f"loading {name} ({method} fine-tune of {info['base_model']})")
            model, _ = load_final(final, info)
            engine = self._engine(model, tokenizer)
            adapter = BASE
        created = int((final / MODEL_INFO).stat().st_mtime)
        encoder = _encoder(tokenizer, engine, chat)
        self._served[name] = Served(name, engine, adapter, tokenizer, encoder, created, where)
        added.append(name)
        task = self._task(final, info, name)
        if task is not None and task_name(name) not in self._served:
            self._served[task_name(name)] = Served(task_name(name), engine, adapter, tokenizer, encoder, created,
                                                   where, "task", task)
            added.append(task_name(name))
        return added

    def _task(self, final: Path, info: dict, name: str) -> Task | None:
        """The run's task as evaluated, or None (said why when its recipe cannot be read)."""
        try:
            return load_task(run_of(final).path, info)
        except (OSError, ValueError, TypeError, yaml.YAMLError, UserError) as exc:
            # A damaged recipe (or a template registered only in the training process) must not keep
            # the run itself from being served.
            self.say(f"not serving {task_name(name)}: {exc}")
            return None

    def _shared_engine(self, ref: str, kind: str | None) -> tuple[Engine, object]:
        """An engine on base ``ref`` that takes adapters of type ``kind`` (loading the base if none has room)."""
        key = _base_key(ref)
        for engine, tokenizer in self._engines.get(key, []):
            if kind is None or engine.peft_type in (None, kind):
                return engine, tokenizer
        resolve_model(ref)  # a missing or unknown model fails here, before anything is said or loaded
        self.say(f"loading base model {ref}")
        model, tokenizer, _ = models.load_causal_lm(ref)
        engine = self._engine(model, tokenizer)
        self._engines.setdefault(key, []).append((engine, tokenizer))
        return engine, tokenizer

    def _engine(self, model, tokenizer) -> Engine:
        import torch

        if torch.cuda.is_available():
            model = model.to("cuda")
        pad = pad_id(tokenizer)
        context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
        engine = Engine(model, pad or 0, context, self.max_batch, self.max_queue, self.observe_batch, self.precision)
        self._started.append(engine)
        return engine.start()

    def _claim(self, name: str, source: str) -> None:
        if name in self._served:
            raise UserError(f"the name {name!r} is already served (from {self._served[name].source}); "
                            "give each run its own directory name", source=source)


def _base_key(ref: str) -> str:
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else ref


def _run_tokenizer(final: Path):
    """The tokenizer saved with the run: its chat template is the one training applied."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(final)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _encoder(tokenizer, engine: Engine, chat: bool) -> Encoder:
    return Encoder(tokenizer, engine.context_length, use_chat_template=chat)
