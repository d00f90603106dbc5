"""Helpers of the fine-tuning tests (``tests/serve``): chat records to upload, a quick job, waiting for a job."""

import json
import time

SENTENCES = ["the movie was great and i loved it", "the movie was terrible and boring",
             "this drug helped my pain a lot",
             "this drug gave me awful side effects", "it was fine, nothing special"]
QUICK = {"type": "supervised", "lmtune": {"training": {"max_steps": 2, "batch_size": 4, "eval_every": 1}}}


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
