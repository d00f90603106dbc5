"""Helpers of the fine-tuning tests (``tests/serve``): chat records to upload, a quick job, waiting for a job."""

import contextlib
import json
import time
from pathlib import Path

import openai

from lmtune.serve.http.server import Server

SENTENCES = ["the movie was great and i loved it", "the movie was terrible and boring",
             "this drug helped my pain a lot",
             "this drug gave me awful side effects", "it was fine, nothing special"]
QUICK = {"type": "supervised", "lmtune": {"training": {"max_steps": 2, "batch_size": 4, "eval_every": 1}}}


@contextlib.contextmanager
def job_server(model_dir: Path, state_dir: Path, **options):
    """``lmtune serve`` of ``model_dir`` on a free port in a thread, stopped on exit."""
    srv = Server([str(model_dir)], port=0, state_dir=state_dir, quiet=True, **options).start()
    try:
        yield srv
    finally:
        srv.stop()


def openai_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def chat_jsonl(n: int = 24) -> bytes:
    records = [{"messages": [{"role": "user", "content": f"{SENTENCES[i % 5]} (review {i})"},
                             {"role": "assistant", "content": ["positive", "negative", "neutral"][i % 3]}]}
               for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def wait(client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def train_chat_run(out: Path, model_dir: Path, data: Path, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA chat run of the tiny model on ``data`` (3 steps), named after ``out``; its run directory."""
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    recipe = {"name": out.name, "seed": seed, "model": str(model_dir), "task": {"type": "chat"},
              "data": {"train": str(data), "split": {"validation": 0.0, "test": 0.0}},
              "method": {"name": "lora", "peft": {"r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0}},
              "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 5e-2, "max_length": 64},
              "eval": {"systems": ["finetuned"]}}
    return run_recipe(recipe_from_dict(recipe), out=out, quiet=True)
