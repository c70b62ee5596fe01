"""What leaves the database about a job: the parameters Prefect keeps name nobody.

A job's flow runs (the parent and its heavy steps) are read back from the Prefect server, as
its UI and API show them to whoever can reach it. Their parameters may hold ids and options
only: no owner, voice name, file, link, chat id, message id, interaction token or display
name. The job's row holds what the job was given, and no reply target.
"""

from __future__ import annotations

import json

# Every parameter an Encore job's flow runs take (flows.cover, separation, training, heavy):
# ids and options. What else a job was given stays in its row (ROW_KEYS), which /forget erases.
RUN_KEYS = {"job_id", "song_id", "voice_id", "options", "chart", "model"}
ROW_KEYS = RUN_KEYS | {"owner", "name", "samples", "files", "consent", "link", "links"}
REPLY_KEYS = ("chat_id", "channel_id", "message_id", "interaction_token", "token", "user")


def flow_runs_of(job_id: str) -> list:
    """Every flow run the Prefect server has for the job (named `<flow>-<job id>`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=job_id))
        )


def assert_parameters_name_nobody(job, *secrets) -> None:
    """The job's runs on the server, and its row, carry no reply target and none of `secrets`."""
    runs = flow_runs_of(job.id)
    assert runs, "the job's runs are not on the Prefect server"
    assert set(job.params) <= ROW_KEYS, job.params
    for run in runs:
        assert set(run.parameters) <= RUN_KEYS, (run.name, run.parameters)
    for params in [job.params, *(run.parameters for run in runs)]:
        text = json.dumps(params, ensure_ascii=False)
        for key in REPLY_KEYS:
            assert f'"{key}"' not in text, params
        for secret in secrets:
            assert str(secret) not in text, (secret, params)


def assert_runs_name_nobody(job_id: str, *secrets) -> None:
    """The job's runs on the server carry ids and options only, and none of `secrets` (what
    the job's row may hold: its owner, a voice's name, its files)."""
    runs = flow_runs_of(job_id)
    assert runs, "the job's runs are not on the Prefect server"
    for run in runs:
        assert set(run.parameters) <= RUN_KEYS, (run.name, run.parameters)
        text = json.dumps(run.parameters, ensure_ascii=False)
        for secret in secrets:
            assert str(secret) not in text, (secret, run.name, run.parameters)
