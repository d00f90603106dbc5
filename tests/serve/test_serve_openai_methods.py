"""OpenAI's three fine-tuning methods (``method.type`` supervised, dpo, reinforcement) through the official openai
client, written as OpenAI's documentation writes the calls: the jobs train the tiny model for a few steps, report
their metrics as events (a reinforcement job its rewards) and checkpoints, and a bad grader or hyperparameter is a
400 naming its param.
"""

import json

import openai
import pytest
from serving import SENTENCES, chat_jsonl, job_server, openai_client, wait

#: The grader of the reinforcement jobs: does the sampled answer contain the record's letter?
GRADER = {"type": "string_check", "name": "has_letter", "input": "{{sample.output_text}}",
          "reference": "{{item.letter}}", "operation": "ilike"}
LONG = {"lmtune": {"training": {"max_steps": 100000, "batch_size": 2}}}


def rft_jsonl(n: int = 24) -> bytes:
    """Records in OpenAI's reinforcement shape: a developer message, the user's prompt, a field for the grader."""
    records = [{"messages": [{"role": "developer", "content": "Answer in one word."},
                             {"role": "user", "content": f"{SENTENCES[i % 5]} (question {i})"}],
                "letter": "aeiou"[i % 5]} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def dpo_jsonl(n: int = 24) -> bytes:
    """Records in OpenAI's DPO shape (a system message too, which a preference pair leaves out)."""
    words = ["positive", "negative"]
    records = [{"input": {"messages": [{"role": "system", "content": "Answer with one word."},
                                       {"role": "user", "content": f"{SENTENCES[i % 5]} (review {i})"}]},
                "preferred_output": [{"role": "assistant", "content": words[i % 2]}],
                "non_preferred_output": [{"role": "assistant", "content": words[1 - i % 2]}]} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with job_server(tiny_model_dir, tmp_path_factory.mktemp("methods-state")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


@pytest.fixture(scope="module")
def files(client):
    """An uploaded training file for each method type."""
    data = {"supervised": chat_jsonl(), "dpo": dpo_jsonl(), "reinforcement": rft_jsonl()}
    return {kind: client.files.create(file=(f"{kind}.jsonl", body), purpose="fine-tune").id
            for kind, body in data.items()}


def methods() -> dict[str, dict]:
    """The ``method`` of each type, with OpenAI's hyperparameters only (a few steps each on the tiny model)."""
    common = {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 2}
    return {"supervised": {"type": "supervised", "supervised": {"hyperparameters": common}},
            "dpo": {"type": "dpo", "dpo": {"hyperparameters": {**common, "beta": 0.25}}},
            "reinforcement": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER, "hyperparameters": {**common, "eval_interval": 1, "compute_multiplier": 0.5,
                                                      "reasoning_effort": "high"}}}}


@pytest.fixture(scope="module")
def jobs(client, files, tiny_model_dir):
    """``{method type: (job as created, job when done)}``, the three queued at once and waited for."""
    created = {kind: client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=files[kind],
                                                    method=method, seed=1)
               for kind, method in methods().items()}
    return {kind: (job, wait(client, job.id, timeout=300)) for kind, job in created.items()}


@pytest.mark.parametrize("kind", ["supervised", "dpo", "reinforcement"])
def test_each_method_trains_and_its_model_is_served(client, jobs, kind):
    job, done = jobs[kind]
    assert job.status == "queued" and job.method.type == kind
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model in {m.id for m in client.models.list()}
    assert job.id in {j.id for j in client.fine_tuning.jobs.list()}
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=500))
    assert any(e.type == "metrics" and e.data.get("train_loss") is not None for e in events)
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert steps and steps == sorted(steps, reverse=True)


def test_a_dpo_job_trains_with_its_beta(client, jobs):
    job, _ = jobs["dpo"]
    assert job.method.dpo.hyperparameters.beta == 0.25
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500)]
    recipe = next(m for m in messages if m.startswith("Training file"))
    assert '"dpo_beta": 0.25' in recipe and "24 preference records" in recipe
    assert any(m.startswith("24 messages before the last user message of their records were left out")
               for m in messages)


def test_a_reinforcement_job_reports_rewards(client, jobs):
    job, _ = jobs["reinforcement"]
    shown = job.method.reinforcement
    assert shown.grader.type == "string_check" and shown.hyperparameters.compute_multiplier == 0.5
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=500))
    metrics = [e.data for e in events if e.type == "metrics"]
    train = [m["train_reward_mean"] for m in metrics if "train_reward_mean" in m]
    valid = [m["valid_reward_mean"] for m in metrics if "valid_reward_mean" in m]
    assert len(train) >= 2 and len(valid) >= len(train) and all(0 <= r <= 1 for r in train + valid)
    messages = [e.message for e in events]
    assert any(m.startswith("Step 1: training loss=") and "reward mean=" in m for m in messages)
    assert any("reasoning_effort 'high' is accepted and ignored" in m for m in messages)
    recipe = next(m for m in messages if m.startswith("Training file"))
    assert '"num_generations": 2' in recipe and '"eval_every": 1' in recipe and "24 prompt records" in recipe
    newest = client.fine_tuning.jobs.checkpoints.list(job.id).data[0]
    assert 0 <= newest.metrics.train_reward_mean <= 1


@pytest.mark.parametrize("kind", ["supervised", "dpo", "reinforcement"])
def test_a_job_of_each_method_is_cancelled(client, files, tiny_model_dir, kind):
    method = methods()[kind]
    job = client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=files[kind],
                                         method={**method, **LONG})
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def refused(client, files, base, method) -> dict:
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=base, training_file=files[method["type"]], method=method)
    return caught.value.body


def test_a_bad_grader_names_its_param(client, files, tiny_model_dir):
    method = {"type": "reinforcement", "reinforcement": {"grader": {**GRADER, "operation": "equals"}}}
    assert refused(client, files, tiny_model_dir.name, method)["param"] == "method.reinforcement.grader.operation"


def test_a_grader_reading_a_field_the_records_lack_is_refused(client, files, tiny_model_dir):
    method = {"type": "reinforcement", "reinforcement": {"grader": {**GRADER, "reference": "{{item.answer}}"}}}
    body = refused(client, files, tiny_model_dir.name, method)
    assert body["param"].startswith("method.reinforcement.grader") and "answer" in body["message"]


INLINE = {"type": "python", "name": "n", "source": "def grade(sample, item):\n    return 1.0\n"}


def test_a_grader_naming_code_on_the_server_is_refused(client, files, tiny_model_dir):
    multi = {"type": "multi", "name": "m", "calculate_output": "a + b",
             "graders": {"a": GRADER, "b": {"type": "callable", "name": "c", "path": "os.path:exists"}}}
    method = {"type": "reinforcement", "reinforcement": {"grader": multi}}
    assert refused(client, files, tiny_model_dir.name, method)["param"] == (
        "method.reinforcement.grader.graders.b.type")


def test_a_python_grader_needs_the_servers_consent(client, files, tiny_model_dir, tmp_path):
    multi = {"type": "multi", "name": "m", "calculate_output": "a + b", "graders": {"a": GRADER, "b": INLINE}}
    body = refused(client, files, tiny_model_dir.name, {"type": "reinforcement", "reinforcement": {"grader": multi}})
    assert body["param"] == "method.reinforcement.grader.graders.b.source"
    assert "--allow-python-graders" in body["message"]
    with job_server(tiny_model_dir, tmp_path, allow_python_graders=True) as trusting:
        other = openai_client(trusting)
        upload = other.files.create(file=("rft.jsonl", rft_jsonl()), purpose="fine-tune").id
        method = {"type": "reinforcement", "reinforcement": {"grader": multi, "hyperparameters": {"n_epochs": 1}}}
        job = other.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=upload, method=method)
        assert job.status in ("validating_files", "queued", "running")
        assert other.fine_tuning.jobs.cancel(job.id).status == "cancelled"


def test_a_reinforcement_job_needs_a_grader(client, files, tiny_model_dir):
    body = refused(client, files, tiny_model_dir.name, {"type": "reinforcement"})
    assert body["param"] == "method.reinforcement.grader"


def test_an_unknown_hyperparameter_is_named(client, files, tiny_model_dir):
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {"temperature": 1}}}
    body = refused(client, files, tiny_model_dir.name, method)
    assert body["param"] == "method.reinforcement.hyperparameters.temperature" and "temperature" in body["message"]
    beta = refused(client, files, tiny_model_dir.name, {"type": "supervised", "supervised": {
        "hyperparameters": {"beta": 0.1}}})  # beta is DPO's
    assert beta["param"] == "method.supervised.hyperparameters.beta"


def test_a_bad_reasoning_effort_is_refused(client, files, tiny_model_dir):
    method = {"type": "reinforcement", "reinforcement": {"grader": GRADER,
                                                         "hyperparameters": {"reasoning_effort": "extreme"}}}
    assert refused(client, files, tiny_model_dir.name, method)["param"] == (
        "method.reinforcement.hyperparameters.reasoning_effort")


def test_reinforcement_records_suit_only_a_reinforcement_job(client, files, tiny_model_dir):
    with pytest.raises(openai.BadRequestError, match="method.type reinforcement"):
        client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=files["reinforcement"])


def test_a_reinforcement_upload_names_its_bad_line(client):
    good = rft_jsonl(2)
    bad = json.dumps({"messages": [{"role": "user", "content": "hi"}], "prompt": "x"}).encode() + b"\n"
    with pytest.raises(openai.BadRequestError, match="rft.jsonl:3: the field 'prompt'"):
        client.files.create(file=("rft.jsonl", good + bad), purpose="fine-tune")
    system = json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "hi"}], "letter": "a"}).encode() + b"\n"
    with pytest.raises(openai.BadRequestError, match="rft.jsonl:3: its system message differs"):
        client.files.create(file=("rft.jsonl", good + system), purpose="fine-tune")


def test_a_dpo_upload_names_its_bad_line(client):
    bad = json.dumps({"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": "yes",
                      "non_preferred_output": [{"role": "assistant", "content": "no"}]}).encode() + b"\n"
    with pytest.raises(openai.BadRequestError, match="dpo.jsonl:3: preferred_output must be"):
        client.files.create(file=("dpo.jsonl", dpo_jsonl(2) + bad), purpose="fine-tune")
