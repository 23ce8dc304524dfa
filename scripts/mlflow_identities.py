#!/usr/bin/env python3
"""Create (or update) the MLflow identities of an ActionCLIP deployment and their permissions. Idempotent.

Runs against a tracking server started with ``mlflow server --app-name basic-auth``, as its admin
(``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, the standard MLflow client variables). In the cluster
it is the ``mlflow-identities`` Job (manifests/base/mlflow-identities.yaml), run from the slim MLflow image.

Identities (name and password from ``MLFLOW_<ROLE>_USERNAME`` / ``MLFLOW_<ROLE>_PASSWORD``):

    writer    pipeline tasks and the fine-tuning PyTorchJob: runs, metrics and logged models in the experiment;
              may only read the registry
    promoter  the pipeline's register step and people promoting or rolling back: also creates model versions
              and moves aliases (``champion`` is what serving deploys)
    reader    serving: reads the experiment's artifacts and the registry, writes nothing

MLflow grants alias changes together with version creation (both are ``update`` on the registered model), so the
registry write permission lives with the promoter alone; the writer cannot touch it. The experiment and the
registered model are created here, by the admin, so no client identity ends up owning them (a creator gets MANAGE).
"""
from __future__ import annotations

import argparse
import os
import sys

# permission per (identity, resource); names are MLflow's (READ, USE, EDIT, MANAGE, NO_PERMISSIONS)
GRANTS = {
    "writer": {"experiment": "EDIT", "registered_model": "READ"},
    "promoter": {"experiment": "EDIT", "registered_model": "EDIT"},
    "reader": {"experiment": "READ", "registered_model": "READ"},
}
MIN_PASSWORD = 16


def _identities(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    out, problems = {}, []
    for role in GRANTS:
        user = env.get(f"MLFLOW_{role.upper()}_USERNAME", "").strip()
        password = env.get(f"MLFLOW_{role.upper()}_PASSWORD", "")
        if not user:
            problems.append(f"MLFLOW_{role.upper()}_USERNAME is not set")
        if len(password) < MIN_PASSWORD or "change-me" in password:
            problems.append(f"MLFLOW_{role.upper()}_PASSWORD must be a real secret of at least {MIN_PASSWORD} "
                            f"characters (not the example's placeholder)")
        out[role] = (user, password)
    users = [u for u, _ in out.values()]
    if len(set(users)) != len(users):
        problems.append(f"the three identities need distinct user names, got {users}")
    if problems:
        raise SystemExit("mlflow_identities: " + "; ".join(problems))
    return out


def bootstrap(tracking_uri: str, experiment: str, model: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Ensure users, the experiment, the registered model and the grants; returns {role: user name}."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    identities = _identities(dict(os.environ if env is None else env))
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    exp = client.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(experiment)
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model)

    for role, (user, password) in identities.items():
        try:
            auth.get_user(user)
            auth.update_user_password(user, password)  # rotating the Secret and re-running the Job rotates it here
        except MlflowException:
            auth.create_user(user, password)
        resources = {"experiment": experiment_id, "registered_model": model}
        for resource_type, permission in GRANTS[role].items():
            _grant(auth, user, resource_type, resources[resource_type], permission)
        print(f"{role}: user {user!r}: " + ", ".join(f"{t} {resources[t]!r} {p}" for t, p in GRANTS[role].items()))
    return {role: user for role, (user, _) in identities.items()}


def _grant(auth, user: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Set exactly ``permission`` (an existing grant with another level is replaced)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(user, resource_type, resource_id, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(user, resource_type, resource_id)
        auth.grant_user_permission(user, resource_type, resource_id, permission)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                   help="the tracking server (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default="actionclip", help="MLflow experiment (default actionclip)")
    p.add_argument("--model", default="actionclip", help="registered model (default actionclip)")
    args = p.parse_args(argv)
    if not args.tracking_uri:
        raise SystemExit("mlflow_identities: no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    if not (os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD")):
        raise SystemExit("mlflow_identities: run as the admin: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
    bootstrap(args.tracking_uri, args.experiment, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
