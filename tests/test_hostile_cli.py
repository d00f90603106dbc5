"""Hostile command lines and recipes: each gets exit 2, one ``error:`` line, no traceback, nothing left behind.

Every case runs ``python -m lmtune.cli`` as a real process in a temporary directory (see ``hostile.py``),
so the check is what a user sees. Each case fails in the checks before any model is trained: a few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hostile import assert_user_error, cli, snapshot
from tiny import build_tokenizer


def _text(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _fake_run(tmp: Path) -> Path:
    """A directory that passes for a finished run up to the point where its model would load."""
    final = tmp / "run" / "final"
    final.mkdir(parents=True)
    (final / "lmtune.json").write_text("{}")
    return final.parent


def _tiny_gpt2(tmp: Path) -> Path:
    """A 2-layer GPT-2 with the tiny tokenizer: its blocks have no ``self_attn``, so no decoder layers to compile."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = build_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(tmp / "gpt2")
    tok.save_pretrained(tmp / "gpt2")
    return tmp / "gpt2"


# name -> (builds the arguments from (tmp, recipe_file, tiny_model_dir), words the error line must contain)
CASES = {
    # Item 5: a recipe name that is not one directory under runs/.
    "name-empty": (lambda t, r, m: ["train", r(name="")], "name"),
    "name-dot": (lambda t, r, m: ["train", r(name="."), "--overwrite"], "name"),
    "name-absolute": (lambda t, r, m: ["data", "prepare", r(name=str(t / "elsewhere"))], "name"),
    # Item 5: --overwrite never deletes a directory that is not a run.
    "overwrite-not-a-run": (lambda t, r, m: ["train", r(), "--out", t, "--overwrite"], "not an lmtune run"),
    # Item 7: output locations.
    "out-is-a-file": (lambda t, r, m: ["train", r(), "--out", _text(t, "f.txt", "x")], "is a file"),
    "out-under-a-file": (lambda t, r, m: ["train", r(), "--out", _text(t, "f.txt", "x") / "run"], "--out"),
    "prepare-out-is-a-file": (lambda t, r, m: ["data", "prepare", r(), "--out", _text(t, "f.txt", "x")],
                              "is a file"),
    "export-out-is-a-file": (lambda t, r, m: ["export", _fake_run(t), "--out", _text(t, "f.txt", "x")],
                             "is a file"),
    "predict-output-is-a-directory": (lambda t, r, m: ["predict", m, "--input",
                                                       _text(t, "in.jsonl", '{"prompt": "hi"}\n'), "--output", t],
                                      "is a directory"),
    # Item 7: numbers a recipe cannot use.
    "seed-negative": (lambda t, r, m: ["train", r(seed=-1)], "seed"),
    "epochs-infinite": (lambda t, r, m: ["train", r(training={"max_steps": None, "epochs": float("inf")})],
                        "training.epochs"),
    # Item 7: usage errors from the argument parser.
    "port-out-of-range": (lambda t, r, m: ["serve", m, "--port", "99999"], "--port"),
    "unknown-flag": (lambda t, r, m: ["train", r(), "--ovewrite"], "--ovewrite"),
    "missing-argument": (lambda t, r, m: ["export", "--out", t / "x"], "missing argument"),
    "bad-option-value": (lambda t, r, m: ["score", _text(t, "p.jsonl", "{}\n"), "--resamples", "lots"],
                         "--resamples"),
    # Recipe files (the schema's own checks, seed ranges and run names among them, are in test_recipe.py).
    "recipe-not-a-mapping": (lambda t, r, m: ["train", _text(t, "list.yaml", "- a\n- b\n")], "mapping"),
    "recipe-yaml-syntax": (lambda t, r, m: ["train", _text(t, "bad.yaml", "name: x\nmodel: [open\n")],
                           "not valid YAML"),
    "recipe-missing": (lambda t, r, m: ["train", t / "nope.yaml"], "no such recipe file"),
    "recipe-is-a-directory": (lambda t, r, m: ["train", t], "is a directory"),
    "set-without-equals": (lambda t, r, m: ["train", r(), "--set", "training.max_steps"], "key.path=value"),
    "set-unknown-key": (lambda t, r, m: ["train", r(), "--set", "training.bogus=1"], "training.bogus"),
    "set-bad-type": (lambda t, r, m: ["train", r(), "--set", "training.batch_size=abc"], "training.batch_size"),
    "model-missing": (lambda t, r, m: ["train", r(model=str(t / "no-model"))], "no-model"),
    # Item 7: the template is checked against the records before the model loads (order: test_cli.py).
    "template-field-missing": (lambda t, r, m: ["train",
                                                r(task={"template": {"prompt": "{nosuch}", "completion": "{label}"}})],
                               "task.template"),
    # Issue 13 item 1: label scoring that cannot fit its memory budget is refused before any system is scored.
    "scoring-over-memory-budget": (lambda t, r, m: ["train", r(eval={"memory_gb": 1e-6})], "eval.memory_gb"),
    # Issue 14: a speed-up the model cannot take is refused once the model loads, before any baseline runs.
    "compile-without-decoder-layers": (lambda t, r, m: ["train", r(model=str(_tiny_gpt2(t)),
                                                                   training={"compile": True})], "training.compile"),
    # Other commands.
    "export-not-a-run": (lambda t, r, m: ["export", t, "--out", t / "exported"], "not a finished lmtune run"),
    "export-unknown-dtype": (lambda t, r, m: ["export", _fake_run(t), "--merge", "--dtype", "int4", "--out",
                                              t / "exported"], "unknown dtype 'int4'"),
    "predict-missing-input": (lambda t, r, m: ["predict", m, "--input", t / "nope.jsonl", "--output",
                                               t / "out.jsonl"], "no such input file"),
    "predict-garbage-in-output": (lambda t, r, m: ["predict", m, "--input", _text(t, "in.jsonl", '{"prompt": "a"}\n'),
                                                   "--output", _text(t, "out.jsonl", "garbage\n")], "out.jsonl:1"),
    "data-check-field-without-equals": (lambda t, r, m: ["data", "check", _text(t, "d.jsonl", '{"text": "a"}\n'),
                                                         "--field", "text"], "--field text"),
    "compare-out-is-a-directory": (lambda t, r, m: ["compare", t, "--out", t], "is a directory"),
    "score-empty-file": (lambda t, r, m: ["score", _text(t, "empty.jsonl", "")], "empty"),
    "score-unknown-metric": (lambda t, r, m: ["score", _text(t, "p.jsonl", json.dumps(
        {"prediction": "a", "reference": "a"}) + "\n"), "--metrics", "rogue"], "unknown metric 'rogue'"),
}

if sys.platform.startswith("linux"):
    # A place nobody may create files in, even root: /proc.
    CASES["out-unwritable"] = (lambda t, r, m: ["train", r(), "--out", "/proc/lmtune-hostile/run"], "cannot write")


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_cli(case, tmp_path, recipe_file, tiny_model_dir):
    build, words = CASES[case]
    args = build(tmp_path, recipe_file, tiny_model_dir)
    before = snapshot(tmp_path)
    proc = cli(*args, cwd=tmp_path)
    assert_user_error(proc, words, before=before, root=tmp_path)
