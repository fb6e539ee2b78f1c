"""Reading back what Prefect recorded: the final state of each task run since a moment."""

from datetime import datetime


def task_states_since(since: datetime) -> dict[str, list[str]]:
    """``{task name: [state names]}`` of the task runs created after ``since`` (e.g. "Cached", "Completed")."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(limit=200)
    out: dict[str, list[str]] = {}
    for run in runs:
        if run.created and run.created > since:
            out.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name)  # "clean-corpus-1bb"
    return out
