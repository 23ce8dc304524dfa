"""Components that open and close the pipeline's MLflow parent run, so every stage nests under one run tree."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from kfp import dsl
from kfp.dsl import PipelineTaskFinalStatus

from actionclip.train.config import StageConfig
from components._settings import settings_from
from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@settings_from(StageConfig, run_name=("", "parent run name; default: the KFP job name."))
def open_run(*, experiment: str, run_name: str, job_name: str, job_id: str) -> str:
    """Create the pipeline's MLflow parent run and return its id (the stages nest their runs under it). The KFP job
    name is tagged on the run, so that the exit handler can find it.

    Returns:
        The MLflow run id of the parent run.
    """
    from components._runtime import JOB_TAG, stage_errors, timed

    with stage_errors("open-run"):
        from actionclip import tracking

        with timed("open-run"):
            run_id = tracking.start_parent_run(
                experiment, run_name or job_name, tags={JOB_TAG: job_name, "kfp.pipeline_job_id": job_id}
            )
        print(f"MLflow parent run {run_id} in experiment {experiment!r} ({tracking.tracking_uri()})")
        return run_id


@dsl.component(base_image=IMAGE, install_kfp_package=False)
@settings_from(StageConfig)
def close_run(status: PipelineTaskFinalStatus, *, experiment: str, job_name: str) -> None:
    """Exit handler: mark the parent run (and any stage run left running) FINISHED or FAILED.

    An exit task may not consume other tasks' outputs, so the parent run is found by the KFP job-name tag that
    ``open_run`` set. Does nothing when the job failed before the parent run existed.

    Args:
        status: the final status of the pipeline body (filled in by KFP).
    """
    from components._runtime import JOB_TAG, stage_errors, timed

    with stage_errors("close-run"):
        from actionclip import tracking

        client = tracking.client()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            print(f"no MLflow experiment {experiment!r}: nothing to close")
            return
        with timed("close-run"):
            ok = status.state == "SUCCEEDED"
            parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_name}'")
            for parent in parents:
                client.set_tag(parent.info.run_id, "kfp.pipeline_status", status.state)
                if status.error_message:
                    client.set_tag(parent.info.run_id, "kfp.pipeline_error", status.error_message[:4000])
                children = client.search_runs(
                    [exp.experiment_id],
                    filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.status = 'RUNNING'",
                )
                for run in [*children, parent]:
                    if run.info.status == "RUNNING":
                        client.set_terminated(run.info.run_id, "FINISHED" if ok else "FAILED")
                print(f"MLflow parent run {parent.info.run_id}: {'FINISHED' if ok else 'FAILED'} ({status.state})")
