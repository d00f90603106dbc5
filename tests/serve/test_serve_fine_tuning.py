"""The files and fine-tuning endpoints (``lmtune.serve.http.files``, ``lmtune.serve.http.fine_tuning``) through
the official openai client: upload, train, serve, cancel, and the errors of each.

Jobs train the tiny model for two or three steps in the server's worker process, so a whole job
takes seconds.
"""

import time

import httpx2 as httpx
import openai
import pytest
from serving import QUICK, chat_jsonl, job_server, openai_client, wait


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with job_server(tiny_model_dir, tmp_path_factory.mktemp("jobs-state")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


@pytest.fixture(scope="module")
def training_file(client):
    return client.files.create(file=("train.jsonl", chat_jsonl()), purpose="fine-tune")


def test_an_upload_is_checked_stored_and_listed(client, training_file):
    assert training_file.purpose == "fine-tune" and training_file.status == "processed"
    assert training_file.bytes == len(chat_jsonl())
    assert client.files.retrieve(training_file.id).filename == "train.jsonl"
    assert training_file.id in {f.id for f in client.files.list()}
    assert client.files.content(training_file.id).read() == chat_jsonl()


def test_an_upload_with_a_broken_line_names_it(client):
    broken = chat_jsonl(2) + b'{"messages": [{"role": "user", "content": "hi"}\n'
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("mine.jsonl", broken), purpose="fine-tune")
    assert caught.value.body["message"].startswith("mine.jsonl:3: not valid JSON")


def test_an_upload_without_an_assistant_reply_names_the_line(client):
    # (a file whose first record ends in a user turn is OpenAI's reinforcement data: test_serve_openai_methods)
    no_reply = chat_jsonl(1) + b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    with pytest.raises(openai.BadRequestError, match=r"mine.jsonl:2: .*assistant"):
        client.files.create(file=("mine.jsonl", no_reply), purpose="fine-tune")


def test_an_upload_for_another_purpose_is_refused(client):
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("mine.jsonl", chat_jsonl()), purpose="assistants")


def test_an_upload_that_is_not_jsonl_is_refused(client):
    with pytest.raises(openai.BadRequestError, match="JSONL"):
        client.files.create(file=("mine.csv", b"text,label\n"), purpose="fine-tune")


def test_a_missing_file_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-missing")


@pytest.fixture(scope="module")
def trained(client, training_file, tiny_model_dir):
    """``(job as created, job when done)``: a quick job on the uploaded file, waited for."""
    job = client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=training_file.id, suffix="reviews",
                                         hyperparameters={"learning_rate_multiplier": 50}, method=QUICK)
    return job, wait(client, job.id)


def test_a_job_is_queued_with_the_hyperparameters_that_run(trained):
    job, _ = trained
    assert job.status == "queued" and job.hyperparameters.learning_rate_multiplier == 50
    assert job.hyperparameters.batch_size == 4  # method.lmtune.training overrides what runs, and shows it


def test_a_job_trains_and_names_its_model(trained, tiny_model_dir):
    job, done = trained
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:{tiny_model_dir.name}:reviews:{job.id}"
    assert done.finished_at >= done.created_at


def test_a_trained_model_is_served_at_once(client, trained):
    _, done = trained
    assert done.fine_tuned_model in {m.id for m in client.models.list()}
    reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=6, temperature=0,
                                           messages=[{"role": "user", "content": "the movie was great"}])
    assert reply.model == done.fine_tuned_model and reply.usage.completion_tokens >= 1


def test_a_job_lists_its_events_newest_first(client, trained):
    job, _ = trained
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert messages[0] == "The job has successfully completed" and messages[-1].startswith("Created fine-tuning job")
    assert any(m.startswith("Step 2: training loss=") for m in messages)


def test_a_job_lists_its_checkpoints_newest_first(client, trained):
    job, _ = trained
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert steps and steps == sorted(steps, reverse=True) and steps[0] == 2


def test_jobs_are_listed(client, trained):
    job, _ = trained
    assert job.id in {j.id for j in client.fine_tuning.jobs.list()}


def test_cancel_stops_a_running_job_and_a_queued_one(client, training_file, tiny_model_dir):
    long = {"type": "supervised", "lmtune": {"training": {"max_steps": 100000, "batch_size": 2}}}
    running = client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=training_file.id, method=long)
    queued = client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=training_file.id, method=long)
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    wait(client, running.id, statuses=("running",))
    cancelled = client.fine_tuning.jobs.cancel(running.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(running.id)
    time.sleep(1)
    assert client.fine_tuning.jobs.retrieve(running.id).status == "cancelled"  # the dead worker changes nothing


def test_a_job_on_a_missing_file_is_refused(client, tiny_model_dir):
    base = tiny_model_dir.name
    with pytest.raises(openai.BadRequestError, match="no such uploaded file"):
        client.fine_tuning.jobs.create(model=base, training_file="file-missing")


def test_a_job_on_an_unknown_model_is_not_found(client, training_file):
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model="no-such-model", training_file=training_file.id)


def test_a_bad_hyperparameter_is_refused(client, training_file, tiny_model_dir):
    base = tiny_model_dir.name
    with pytest.raises(openai.BadRequestError, match="n_epochs"):
        client.fine_tuning.jobs.create(model=base, training_file=training_file.id, hyperparameters={"n_epochs": 0})


def test_a_bad_lmtune_setting_names_its_param(client, training_file, tiny_model_dir):
    base = tiny_model_dir.name
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=base, training_file=training_file.id,
                                       method={"type": "supervised", "lmtune": {"training": {"learning_rate": 5}}})
    assert caught.value.body["param"] == "method.lmtune.training.learning_rate"


def test_a_dpo_job_is_refused(client, training_file, tiny_model_dir):
    base = tiny_model_dir.name
    with pytest.raises(openai.BadRequestError, match="dpo"):
        client.fine_tuning.jobs.create(model=base, training_file=training_file.id, method={"type": "dpo"})


def test_a_missing_job_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-missing")


def test_a_job_without_a_model_names_the_param(server, training_file):
    response = httpx.post(server.url + "/v1/fine_tuning/jobs", json={"training_file": training_file.id})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
