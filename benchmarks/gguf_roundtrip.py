"""GGUF round trip: a run exported with ``lmtune export --format gguf`` runs in llama.cpp and answers as lmtune did.

A finished run of the demo recipe (``--run``; by default one is trained first with ``lmtune train
recipes/drug-reviews-demo.yaml --quiet`` plus any ``--set``, and its time is reported) is exported with the CLI
to GGUF ``f16`` and ``q8_0`` (``lmtune export RUN --format gguf --quant Q --out DIR``, which writes
``DIR/model.gguf``). Each file is loaded by llama.cpp itself, through its Python binding ``llama_cpp``, and
asked about every test review the run evaluated (``--max-examples N`` for the first N), with the exact prompt
lmtune used: the run's recipe, template and tokenizer (its chat template) through lmtune's own
``evaluate.systems.build_prompts``, so the token ids llama.cpp reads are the ones lmtune scored. Per quant:

- label agreement: llama.cpp's label, chosen as lmtune chooses it (label scoring: the sum of the log-probabilities
  of each label's tokens and the EOS after them, given the prompt; the highest wins), against the run's
  ``predictions/finetuned.jsonl`` (targets: at least 98% for f16, 95% for q8_0; the script exits 1 below them);
  and the mean and largest absolute difference of the label log-likelihoods from the ones lmtune wrote there;
- greedy agreement: the first word llama.cpp generates at temperature 0 (argmax), against lmtune's label;
- accuracy of llama.cpp's labels and of lmtune's against the references;
- whether llama.cpp's own chat template (from the GGUF's metadata) and tokenizer give the same prompt ids;
- file size (MB), load time (s), and the speed of prompt processing and of generation (tokens/s, one prompt at
  a time, ``--gen-tokens`` greedy tokens with EOS banned, over the first ``--speed-examples`` prompts), beside
  lmtune's own generation on the same prompts (``lmtune.inference.generation.generate_detailed`` in process, not
  through ``lmtune serve``: the run's model with the adapter merged, batch 1, under the autocast of the run's
  ``training.precision``, as evaluation ran: bf16 on CPUs with native bf16), and whether the greedy tokens are
  the same (all of them, and the mean length of the common prefix).

How llama.cpp scores a label: the prompt is evaluated once (``Llama.eval``) and the log-softmax of the logits
after it (read with ``llama_get_logits_ith``: with ``logits_all=False`` llama_cpp keeps no copy) gives the first
label token; for each further token the context is rewound to the prompt plus the label so far (``n_tokens``;
``eval`` drops the KV cache past it) and the previous label token is evaluated. As a check, on the first example
a second context with ``logits_all=True`` keeps every position's logits and the log-softmax is taken by hand
(numpy) at each label position: fed in the same chunks the two must agree within 1e-3 (they agree to ~1e-8);
the difference when prompt and label are read in one pass is printed too (llama.cpp's batched kernels round
differently from its one-token ones: noise, not an error; about 1e-5 for f16).

On a busy machine llama.cpp's threads spin-wait for each other and slow down many times over when another
process takes a core (measured here, load 3 on 2 cores: 5 generated tokens/s with 2 threads, 80 with 1); the
script warns when the load average is above 0.5: pass ``--threads 1`` there, or measure on a quiet machine.

Measured 2026-11-26, 2 CPU cores (AVX512-BF16), a SHORT demo run (``--set training.max_steps=30 --set
eval.max_examples=60 --set eval.systems=[finetuned]``, trained in 2.6 min), 60 test reviews, load ~0.9,
llama.cpp 2 threads: f16 270.9 MB, q8_0 144.8 MB, both load in 0.11 s, label agreement 100% and greedy
agreement 100% for both, accuracy 70.0% for both and for lmtune, label log-likelihoods within 0.07 (f16) /
0.09 (q8_0) on average of lmtune's bf16 ones; prompt ids identical with llama.cpp's own template and tokenizer
for all 60; prompt tokens/s 516 (f16) / 627 (q8_0) vs lmtune 605; generated tokens/s 88 / 117 vs lmtune 13.7.

llama-cpp-python has no binary wheel for this platform on PyPI, so its source package (which vendors llama.cpp)
is built once into a wheel (CPU only, ``nice -n 10``) and cached in
``${LMTUNE_HOME:-~/.cache/lmtune}/llama-cpp-python/<version>/``; later runs reuse the cached wheel and install
it into this Python's environment when the benchmark runs (it is not a dependency of lmtune). The first build
takes a while on 2 cores; its log is ``build.log`` beside the wheel.

Usage:
    python benchmarks/gguf_roundtrip.py [--run RUN] [--set key=value ...] [--quants f16,q8_0] [--max-examples N]
        [--speed-examples 16] [--gen-tokens 32] [--threads N] [--work DIR] [--json]
    python benchmarks/gguf_roundtrip.py --build-only          # build/cache the llama-cpp-python wheel, nothing else
    python benchmarks/gguf_roundtrip.py --run RUN --gguf FILE --system zero_shot   # a GGUF made elsewhere (e.g.
        the base model's) against another system's predictions; no export, no targets
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "drug-reviews-demo.yaml"
#: The llama-cpp-python release built (its sdist vendors the matching llama.cpp).
LLAMA_CPP_VERSION = "0.3.36"
#: CPU only, tuned for this machine; no BLAS, no CUDA, no libcurl (nothing is downloaded by llama.cpp).
CMAKE_ARGS = "-DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DLLAMA_CURL=OFF"
TARGETS = {"f16": 0.98, "q8_0": 0.95}


def say(*parts: Any, quiet: bool = False) -> None:
    """Progress, on stderr with --json (stdout then holds the JSON object only)."""
    print(*parts, file=sys.stderr if quiet else sys.stdout, flush=True)


# --- llama-cpp-python: built once from source, cached, installed when the benchmark runs ----------------------

def cache_dir(version: str) -> Path:
    from lmtune.assets import cache_root

    return Path(cache_root()) / "llama-cpp-python" / version


def cached_wheel(version: str) -> Path | None:
    wheels = sorted(cache_dir(version).glob("llama_cpp_python-*.whl"))
    return wheels[-1] if wheels else None


def build_wheel(version: str, quiet: bool) -> Path:
    """The cached wheel of llama-cpp-python ``version``; built from its sdist first when there is none."""
    found = cached_wheel(version)
    if found is not None:
        say(f"llama-cpp-python {version}: cached wheel {found}", quiet=quiet)
        return found
    folder = cache_dir(version)
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    sdists = sorted((folder / "sdist").glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        say(f"llama-cpp-python {version}: downloading the source package (pip download --no-binary :all:)",
            quiet=quiet)
        subprocess.run([*pip, "download", f"llama-cpp-python=={version}", "--no-binary", ":all:", "--no-deps",
                        "-d", str(folder / "sdist")], check=True, stdout=subprocess.DEVNULL)
        sdists = sorted((folder / "sdist").glob("llama_cpp_python-*.tar.gz"))
    log = folder / "build.log"
    staging = Path(tempfile.mkdtemp(prefix="wheel-", dir=folder))
    say(f"llama-cpp-python {version}: building a CPU wheel from {sdists[-1].name} (nice -n 10, "
        f"CMAKE_ARGS={CMAKE_ARGS!r}); log: {log}. This takes a while on 2 cores.", quiet=quiet)
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(_cores())}
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(["nice", "-n", "10", *pip, "wheel", "--no-deps", "-v", "-w", str(staging),
                               str(sdists[-1])], env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    wheels = list(staging.glob("llama_cpp_python-*.whl"))
    if done.returncode != 0 or not wheels:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"building llama-cpp-python failed (exit {done.returncode}); see {log}")
    target = folder / wheels[0].name
    os.replace(wheels[0], target)  # the wheel appears in the cache only once it is complete
    shutil.rmtree(staging, ignore_errors=True)
    (folder / "build.json").write_text(json.dumps({"wheel": target.name, "seconds": round(seconds),
                                                   "cmake_args": CMAKE_ARGS, "cores": _cores()}, indent=2))
    say(f"llama-cpp-python {version}: built {target.name} in {seconds / 60:.1f} min, cached in {folder}", quiet=quiet)
    return target


def install_llama_cpp(version: str, quiet: bool) -> dict[str, Any]:
    """Import llama_cpp, installing the cached wheel (built first if need be) into this environment if it is not."""
    try:
        import llama_cpp

        if llama_cpp.__version__ == version:
            say(f"llama-cpp-python {version} is installed in {sys.prefix}", quiet=quiet)
            return {"version": version, "installed_now": False}
    except ImportError:
        pass
    wheel = build_wheel(version, quiet)
    say(f"installing the cached wheel into {sys.prefix}: pip install {wheel}", quiet=quiet)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", str(wheel)], check=True)
    importlib.invalidate_caches()
    for name in [m for m in sys.modules if m == "llama_cpp" or m.startswith("llama_cpp.")]:
        del sys.modules[name]
    import llama_cpp

    return {"version": llama_cpp.__version__, "installed_now": True, "wheel": str(wheel)}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- the run: trained if not given, exported by the CLI --------------------------------------------------------

def lmtune_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmtune.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def train(out: Path, sets: list[str], quiet: bool) -> float:
    say(f"training the demo recipe into {out} (lmtune train {RECIPE.name} --quiet"
        f"{''.join(f' --set {s}' for s in sets)})", quiet=quiet)
    started = time.perf_counter()
    done = lmtune_cli("train", str(RECIPE), "--out", str(out), "--quiet", *[a for s in sets for a in ("--set", s)])
    if done.returncode != 0:
        raise SystemExit(f"lmtune train failed:\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    say(f"trained in {seconds / 60:.1f} min", quiet=quiet)
    return seconds


def export(run: Path, quant: str, out: Path, quiet: bool) -> tuple[Path, float]:
    started = time.perf_counter()
    done = lmtune_cli("export", str(run), "--format", "gguf", "--quant", quant, "--out", str(out))
    if done.returncode != 0:
        raise SystemExit(f"lmtune export --format gguf --quant {quant} failed:\n{(done.stderr or done.stdout)[-3000:]}")
    seconds = time.perf_counter() - started
    path = out / "model.gguf"
    if not path.is_file():
        raise SystemExit(f"lmtune export --format gguf wrote no {path}: {sorted(p.name for p in out.iterdir())}")
    say(f"exported {quant}: {path} ({path.stat().st_size / 1e6:.1f} MB) in {seconds:.1f} s", quiet=quiet)
    return path, seconds


# --- the prompts lmtune used --------------------------------------------------------------------------------------

@dataclass
class Case:
    """One test example: lmtune's prompt ids and messages, its reference and what lmtune answered."""

    ids: list[int]
    messages: list[dict[str, str]]
    reference: str
    lmtune: str
    lmtune_scores: dict[str, float] = field(default_factory=dict)


@dataclass
class Prompts:
    cases: list[Case]
    labels: list[str]
    label_ids: list[list[int]]
    tokenizer: Any
    chat: bool
    cut: int  # prompts shortened to the model's context (as lmtune did)


def lmtune_prompts(run_dir: Path, system: str, max_examples: int | None) -> Prompts:
    """The test examples the run evaluated, their prompts built by lmtune's evaluation code, and its answers."""
    from transformers import AutoTokenizer

    from lmtune.data import io
    from lmtune.data.encode import Encoder
    from lmtune.data.formats import load_examples
    from lmtune.data.sample import sample_examples
    from lmtune.data.templates import resolve
    from lmtune.evaluate.systems import TaskSpec, build_prompts
    from lmtune.recipe import recipe_from_dict
    from lmtune.run_dir import RunDir

    run = RunDir(run_dir)
    if not run.is_run or not run.final_info.is_file():
        raise SystemExit(f"{run_dir}: not a finished lmtune run (no recipe.yaml, manifest.json, final/lmtune.json)")
    recipe = recipe_from_dict(run.read_recipe(), source=str(run.recipe))
    task = recipe.task
    if not task.labels:
        raise SystemExit(f"{run_dir}: not a classification run (task.labels is empty)")
    predictions = run.read_predictions(system)
    if not predictions:
        raise SystemExit(f"{run_dir}: no {run.prediction(system)}; the run did not evaluate {system}")
    test = load_examples(io.read_rows(run.data.split("test")), {}, task.type, task.labels)
    kept, _ = sample_examples(test, recipe.eval.max_examples, recipe.seed, recipe.eval.sample)
    test = [test[i] for i in kept]  # what lifecycle._sample_test evaluated, in its order
    tokenizer = AutoTokenizer.from_pretrained(run.final)  # the run's own, its chat template included
    encoder = Encoder(tokenizer, recipe.training.max_length, task.chat_template)
    template = resolve(task.template, test[0].format)
    spec = TaskSpec(task.type, task.labels, template, recipe.eval.max_new_tokens)
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=_context(run.read_final_info())))
    rendered, ids, cut = build_prompts(model, encoder, spec, test)
    if len(rendered) != len(predictions):
        raise SystemExit(f"{run.prediction(system)} has {len(predictions)} rows but the run evaluated {len(rendered)} "
                         "test examples; cannot pair them")
    cases = []
    for r, prompt, row in zip(rendered, ids, predictions):
        user = [m["content"] for m in r.messages if m["role"] == "user"][-1]
        if user != row["input"] or r.completion != row["reference"]:
            raise SystemExit(f"{run.prediction(system)}: row {len(cases) + 1} is not the prompt rebuilt for test "
                             f"example {len(cases) + 1} ({row['input'][:60]!r} vs {user[:60]!r})")
        cases.append(Case(prompt, r.messages, row["reference"], row["prediction"], row.get("scores") or {}))
    if max_examples is not None:
        cases = cases[:max_examples]
    return Prompts(cases, list(task.labels), [encoder.target_ids(label) for label in task.labels], tokenizer,
                   encoder.chat, cut)


def _context(info: dict) -> int:
    """The base model's context length (lmtune cuts test prompts to it, less the longest label)."""
    from lmtune.assets import resolve_model

    for where in ((info.get("base_model_source") or {}).get("path"), None):
        try:
            path = Path(where) if where else Path(resolve_model(info["base_model"]).path)
            return int(json.loads((path / "config.json").read_text())["max_position_embeddings"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 1 << 30


# --- llama.cpp ----------------------------------------------------------------------------------------------------

def log_softmax(row):
    import numpy as np

    row = np.asarray(row, dtype=np.float64)
    top = row.max()
    return row - (top + math.log(np.exp(row - top).sum()))


class LlamaModel:
    """One GGUF file in llama.cpp: label scoring, greedy generation and timing from given token ids."""

    def __init__(self, path: Path, n_ctx: int, threads: int):
        import llama_cpp

        self.lib = llama_cpp
        started = time.perf_counter()
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   logits_all=False, verbose=False)
        self.load_s = time.perf_counter() - started
        self.n_vocab = self.llm.n_vocab()
        self.eos = self.llm.token_eos()

    def close(self) -> None:
        self.llm.close()

    def _logits(self):
        """The logits after the last token evaluated (llama_cpp keeps no copy of them with logits_all=False)."""
        import numpy as np

        pointer = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def feed(self, tokens: list[int], keep: int | None = None):
        """Evaluate ``tokens`` after the first ``keep`` tokens already in the cache (None: from scratch)."""
        if keep is None:
            self.llm.reset()
        else:
            self.llm.n_tokens = keep  # eval() drops the cache past n_tokens before it decodes
        self.llm.eval(tokens)
        return self._logits()

    def label_scores(self, prompt: list[int], label_ids: list[list[int]]) -> list[float]:
        """Sum of log p(token | prompt, earlier label tokens) over each label's tokens (EOS included)."""
        first = log_softmax(self.feed(prompt))
        scores = []
        for label in label_ids:
            total = float(first[label[0]])
            for d in range(1, len(label)):
                total += float(log_softmax(self.feed([label[d - 1]], keep=len(prompt) + d - 1))[label[d]])
            scores.append(total)
        return scores

    def greedy(self, prompt: list[int], n: int, ban_eos: bool) -> tuple[list[int], float, float]:
        """``n`` greedy tokens (fewer at EOS unless banned); seconds of the prompt pass and of the decode steps."""
        started = time.perf_counter()
        logits = self.feed(prompt)
        prompt_s = time.perf_counter() - started
        out: list[int] = []
        started = time.perf_counter()
        while True:
            if ban_eos:
                logits[self.eos] = -math.inf
            token = int(logits.argmax())
            out.append(token)
            if len(out) >= n or (token == self.eos and not ban_eos):
                break
            logits = self.feed([token], keep=len(prompt) + len(out) - 1)
        return out, prompt_s, time.perf_counter() - started

    def text(self, tokens: list[int]) -> str:
        return self.llm.detokenize([t for t in tokens if t != self.eos]).decode("utf-8", errors="replace")

    def own_prompt_ids(self, messages: list[dict[str, str]]) -> list[int] | None:
        """The prompt as llama.cpp itself would build it: the GGUF's chat template, then its tokenizer."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        token = self.llm.detokenize
        bos = self.llm.token_bos()
        formatter = Jinja2ChatFormatter(template, eos_token=token([self.eos], special=True).decode(),
                                        bos_token=token([bos], special=True).decode() if bos >= 0 else "",
                                        add_generation_prompt=True)
        text = formatter(messages=messages).prompt
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def check_scoring(path: Path, n_ctx: int, threads: int, prompt: list[int], label_ids: list[list[int]],
                  fast: list[float]) -> tuple[float, float]:
    """How far :meth:`LlamaModel.label_scores` is from a by-hand computation on one example.

    A second llama.cpp context with ``logits_all=True`` keeps every position's logits; the log-softmax is
    taken by hand (numpy) at each label position. Returns the largest difference (a) with the label fed
    token by token after the prompt, as the scorer feeds it (the same arithmetic: must be ~0), and (b) with
    prompt and label read in one pass (llama.cpp's batched kernels round differently from its one-token
    ones: this is the size of that noise, not an error).
    """
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                          logits_all=True, verbose=False)
    same_path = one_pass = 0.0
    try:
        for label, expected in zip(label_ids, fast):
            for chunks in ([prompt, *([t] for t in label[:-1])], [prompt + label]):
                llm.reset()
                for chunk in chunks:
                    llm.eval(chunk)
                rows = llm.scores[len(prompt) - 1:len(prompt) + len(label) - 1]  # row i predicts label[i]
                by_hand = sum(float(log_softmax(row)[token]) for row, token in zip(rows, label))
                if len(chunks) > 1:
                    same_path = max(same_path, abs(by_hand - expected))
                else:
                    one_pass = max(one_pass, abs(by_hand - expected))
    finally:
        llm.close()
    return same_path, one_pass


def first_word(text: str) -> str:
    words = re.findall(r"[\w-]+", text)
    return words[0].casefold() if words else ""


def evaluate_gguf(path: Path, prompts: Prompts, n_ctx: int, threads: int, speed: list[Case], gen_tokens: int,
                  quiet: bool) -> dict[str, Any]:
    """Everything measured on one GGUF file."""
    model = LlamaModel(path, n_ctx, threads)
    say(f"  loaded {path.name} in {model.load_s:.2f} s (llama.cpp, {threads} threads, n_ctx {n_ctx})", quiet=quiet)
    labels, cases = prompts.labels, prompts.cases
    longest = max(len(x) for x in prompts.label_ids)
    answers, greedy, score_diff, same_ids, prompt_tokens = [], [], [], 0, 0
    eos_hf = prompts.tokenizer.eos_token_id
    started = time.perf_counter()
    for i, case in enumerate(cases):
        scores = model.label_scores(case.ids, prompts.label_ids)
        answers.append(labels[max(range(len(labels)), key=scores.__getitem__)])
        if case.lmtune_scores:
            score_diff += [abs(s - case.lmtune_scores[label]) for s, label in zip(scores, labels)
                           if label in case.lmtune_scores]
        tokens, _, _ = model.greedy(case.ids, longest + 1, ban_eos=False)
        greedy.append(first_word(model.text(tokens)))
        own = model.own_prompt_ids(case.messages) if prompts.chat else None
        same_ids += own == case.ids
        if i == 0:
            worst, one_pass = check_scoring(path, n_ctx, threads, case.ids, prompts.label_ids, scores)
            check = {"by_hand_max_abs_diff": worst, "one_pass_max_abs_diff": one_pass}
            say(f"  scoring check on example 1 (by-hand log-softmax of all logits): largest difference {worst:.1e} "
                f"fed as scored, {one_pass:.1e} read in one pass (llama.cpp's batched kernels)", quiet=quiet)
            if worst > 1e-3:
                raise SystemExit(f"label scoring in llama.cpp disagrees with the by-hand computation by {worst}")
        if (i + 1) % 50 == 0:
            say(f"  {i + 1}/{len(cases)} examples", quiet=quiet)
    scoring_s = time.perf_counter() - started
    n = len(cases)
    refs = [c.reference for c in cases]
    result: dict[str, Any] = {
        "file": str(path), "file_mb": round(path.stat().st_size / 1e6, 1), "load_s": round(model.load_s, 2),
        "examples": n,
        "label_agreement": sum(a == c.lmtune for a, c in zip(answers, cases)) / n,
        "greedy_agreement": sum(g == c.lmtune.casefold() for g, c in zip(greedy, cases)) / n,
        "greedy_is_a_label": sum(g in {x.casefold() for x in labels} for g in greedy) / n,
        "accuracy": sum(a == r for a, r in zip(answers, refs)) / n,
        "lmtune_accuracy": sum(c.lmtune == r for c, r in zip(cases, refs)) / n,
        "label_score_mean_abs_diff": (sum(score_diff) / len(score_diff)) if score_diff else None,
        "label_score_max_abs_diff": max(score_diff) if score_diff else None,
        "prompt_ids_identical": (same_ids / n) if prompts.chat else None,
        "eos_same": model.eos == eos_hf,
        "scoring_s_per_example": round(scoring_s / n, 4), "scoring_check": check,
        "disagreements": [{"input": c.messages[-1]["content"][:200], "lmtune": c.lmtune, "llama_cpp": a,
                           "reference": c.reference} for a, c in zip(answers, cases) if a != c.lmtune][:10],
    }
    # Speed: one prompt at a time, the prompt pass, then gen_tokens greedy tokens with EOS banned.
    prompt_s = decode_s = 0.0
    streams = []
    for case in speed:
        tokens, p_s, d_s = model.greedy(case.ids, gen_tokens, ban_eos=True)
        prompt_s, decode_s = prompt_s + p_s, decode_s + d_s
        streams.append(tokens)
        prompt_tokens += len(case.ids)
    result.update(prompt_tokens_per_s=prompt_tokens / prompt_s,
                  gen_tokens_per_s=len(speed) * (gen_tokens - 1) / decode_s, speed_streams=streams)
    model.close()
    return result


# --- lmtune's own generation, in process ----------------------------------------------------------------------------

def lmtune_speed(run_dir: Path, system: str, speed: list[Case], gen_tokens: int) -> dict[str, Any]:
    """Prompt pass and greedy decode speed of lmtune's generation API on the run's model (adapter merged)."""
    import torch

    from lmtune import models, precision
    from lmtune.export import load_final
    from lmtune.inference.generation import generate_detailed
    from lmtune.methods.merge import merged_adapter
    from lmtune.run_dir import RunDir

    run = RunDir(run_dir)
    if system == "finetuned":
        model, tokenizer = load_final(run.final)
    else:
        model, tokenizer, _ = models.load_causal_lm(run.read_final_info()["base_model"])
    pad = models.pad_id(tokenizer)
    # The autocast evaluation ran under (training.precision; auto is bf16 on CPUs with native bf16).
    compute = precision.resolve(str((run.read_recipe().get("training") or {}).get("precision", "auto")), "cpu")
    prompt_s = decode_s = 0.0
    n_prompt = 0
    streams = []
    with merged_adapter(model), torch.inference_mode(), precision.autocast(torch.device("cpu"), compute):
        generate_detailed(model, tokenizer, [speed[0].ids], 2, pad, 1, quiet=True)  # warm-up
        for case in speed:
            started = time.perf_counter()
            generate_detailed(model, tokenizer, [case.ids], 1, pad, 1, quiet=True)
            one = time.perf_counter() - started
            started = time.perf_counter()
            out = generate_detailed(model, tokenizer, [case.ids], gen_tokens, pad, 1, quiet=True,
                                    min_new_tokens=gen_tokens)
            whole = time.perf_counter() - started
            prompt_s += one
            decode_s += max(whole - one, 1e-9)
            n_prompt += len(case.ids)
            streams.append(out.tokens[0])
    return {"prompt_tokens_per_s": n_prompt / prompt_s, "gen_tokens_per_s": len(speed) * (gen_tokens - 1) / decode_s,
            "torch_threads": torch.get_num_threads(), "precision": compute, "speed_streams": streams}


# --- the report --------------------------------------------------------------------------------------------------

def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def table(results: dict[str, dict[str, Any]], lmtune: dict[str, Any] | None, n: int, gen_tokens: int,
          n_speed: int) -> str:
    lines = [f"| model | file (MB) | load (s) | label agreement | greedy agreement | accuracy | "
             f"score diff (mean/max) | same prompt ids | prompt tok/s | gen tok/s | same {gen_tokens} greedy tokens "
             "(all / mean prefix) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for quant, r in results.items():
        diff = ("n/a" if r["label_score_mean_abs_diff"] is None
                else f"{r['label_score_mean_abs_diff']:.4f} / {r['label_score_max_abs_diff']:.4f}")
        lines.append(f"| llama.cpp {quant} | {r['file_mb']:.1f} | {r['load_s']:.2f} | {_pct(r['label_agreement'])} | "
                     f"{_pct(r['greedy_agreement'])} | {_pct(r['accuracy'])} | {diff} | "
                     f"{_pct(r['prompt_ids_identical'])} | {r['prompt_tokens_per_s']:.0f} | "
                     f"{r['gen_tokens_per_s']:.1f} | {_pct(r.get('same_greedy_tokens'))} / "
                     f"{r.get('same_greedy_prefix_mean', 0):.1f} |")
    if lmtune is not None:
        first = next(iter(results.values()))
        lines.append(f"| lmtune (PyTorch {lmtune['precision']}, in process) | | | (reference) | | "
                     f"{_pct(first['lmtune_accuracy'])} | | | "
                     f"{lmtune['prompt_tokens_per_s']:.0f} | {lmtune['gen_tokens_per_s']:.1f} | |")
    lines.append(f"\n{n} test examples; speed over the first {n_speed} prompts, one at a time, {gen_tokens} greedy "
                 "tokens each (EOS banned); agreement is with lmtune's own predictions.")
    return "\n".join(lines)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run of the demo recipe (default: train one)")
    parser.add_argument("--set", action="append", default=[], help="recipe overrides when training, e.g. "
                        "training.max_steps=30")
    parser.add_argument("--quants", default="f16,q8_0", help="comma-separated --quant values to export")
    parser.add_argument("--gguf", type=Path, action="append", default=[],
                        help="score this GGUF file instead of exporting (repeatable; no targets)")
    parser.add_argument("--system", default="finetuned", choices=["finetuned", "zero_shot"],
                        help="whose predictions to compare with (zero_shot: for the base model's GGUF)")
    parser.add_argument("--max-examples", type=int, help="the first N test examples (default: all)")
    parser.add_argument("--speed-examples", type=int, default=16, help="prompts timed")
    parser.add_argument("--gen-tokens", type=int, default=32, help="greedy tokens per timed prompt")
    parser.add_argument("--threads", type=int, default=_cores(), help="llama.cpp threads (default: all cores)")
    parser.add_argument("--n-ctx", type=int, default=0, help="llama.cpp context (default: the longest prompt + "
                        "what is generated)")
    parser.add_argument("--work", type=Path, help="keep the trained run and exports here (default: a temporary "
                        "directory, removed)")
    parser.add_argument("--llama-cpp-version", default=LLAMA_CPP_VERSION)
    parser.add_argument("--build-only", action="store_true", help="build and cache the llama-cpp-python wheel only")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (progress on stderr)")
    return parser.parse_args()


def measure(args: argparse.Namespace, work: Path, summary: dict[str, Any], quiet: bool) -> tuple[dict, dict, int]:
    """Train (unless --run), export, and measure every GGUF file and lmtune; (results, lmtune's, examples)."""
    run_dir = args.run
    if run_dir is None:
        run_dir = work / "run"
        summary["train_seconds"] = round(train(run_dir, args.set, quiet), 1)
        summary["train_overrides"] = args.set
    summary["run"] = str(run_dir)
    prompts = lmtune_prompts(run_dir, args.system, args.max_examples)
    unique = len({p.name for p in args.gguf}) == len(args.gguf)
    files = {p.name if unique else f"{p.parent.name}/{p.name}": p for p in args.gguf}
    if not files:
        summary["export_seconds"] = {}
        for quant in args.quants.split(","):
            files[quant], summary["export_seconds"][quant] = export(run_dir, quant, work / f"gguf-{quant}", quiet)
    speed = prompts.cases[:args.speed_examples]
    longest = max(len(c.ids) for c in prompts.cases) + max(len(x) for x in prompts.label_ids)
    n_ctx = args.n_ctx or 64 * math.ceil((longest + args.gen_tokens + 8) / 64)
    say(f"{len(prompts.cases)} test examples, labels {prompts.labels}, prompts cut to the context by lmtune: "
        f"{prompts.cut}", quiet=quiet)
    summary["load_average_timing"] = round(os.getloadavg()[0], 2)
    say(f"load average before timing: {summary['load_average_timing']:.2f}", quiet=quiet)
    results = {}
    for name, path in files.items():
        say(f"llama.cpp on {name} ({path})", quiet=quiet)
        results[name] = evaluate_gguf(path, prompts, n_ctx, args.threads, speed, args.gen_tokens, quiet)
    say(f"lmtune's own generation on the same {len(speed)} prompts (in process)", quiet=quiet)
    lmtune = lmtune_speed(run_dir, args.system, speed, args.gen_tokens)
    for r in results.values():
        pairs = list(zip(r.pop("speed_streams"), lmtune["speed_streams"]))
        r["same_greedy_tokens"] = sum(a == b for a, b in pairs) / len(pairs)
        r["same_greedy_prefix_mean"] = sum(_common_prefix(a, b) for a, b in pairs) / len(pairs)
    lmtune.pop("speed_streams")
    summary.update(examples=len(prompts.cases), system=args.system, threads=args.threads, n_ctx=n_ctx,
                   gen_tokens=args.gen_tokens, speed_examples=len(speed), quants=results,
                   lmtune={**lmtune, "how": "lmtune.inference.generation.generate_detailed in process, "
                           "adapter merged, batch 1, under the run's training.precision autocast"})
    summary["load_average_after"] = round(os.getloadavg()[0], 2)
    return results, lmtune, len(prompts.cases)


def main() -> None:
    args = arguments()
    quiet = args.json
    if args.build_only:
        build_wheel(args.llama_cpp_version, quiet)
        return
    load_before = os.getloadavg()[0]
    say(f"load average before: {load_before:.2f} (quote timings from a quiet machine)", quiet=quiet)
    summary: dict[str, Any] = {"load_average_before": round(load_before, 2)}
    if load_before > 0.5 and args.threads > 1:
        say(f"warning: the machine is busy; llama.cpp's {args.threads} threads spin-wait for each other and slow down "
            "many times over when another process takes a core: pass --threads 1 (or set OMP_WAIT_POLICY=passive) "
            "and say so beside its figures", quiet=quiet)
    summary["llama_cpp"] = install_llama_cpp(args.llama_cpp_version, quiet)
    work = args.work or Path(tempfile.mkdtemp(prefix="gguf-roundtrip-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results, lmtune, n = measure(args, work, summary, quiet)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    failed = [f"{q}: label agreement {_pct(r['label_agreement'])} < {_pct(TARGETS[q])}"
              for q, r in results.items() if not args.gguf and q in TARGETS and r["label_agreement"] < TARGETS[q]]
    summary["failed"] = failed
    if args.json:
        print(json.dumps(summary))
    else:
        print(table(results, lmtune, n, args.gen_tokens, summary["speed_examples"]))
        for q, r in results.items():
            for d in r["disagreements"][:3]:
                print(f"  {q} disagrees: lmtune {d['lmtune']}, llama.cpp {d['llama_cpp']} (reference "
                      f"{d['reference']}): {d['input'][:100]!r}")
        print(json.dumps({**summary, "quants": {q: {k: v for k, v in r.items() if k != "disagreements"}
                                                for q, r in results.items()}}))
    if failed:
        raise SystemExit("below target: " + "; ".join(failed))


if __name__ == "__main__":
    main()
