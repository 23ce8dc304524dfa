#!/usr/bin/env python3
"""The documented deploy steps for an overlay (docs/deploy.md), with the checks that keep placeholder secrets out.

    scripts/deploy.py secrets local     write every missing env file of manifests/overlays/local from its
                                        .example, with fresh random values for passwords and keys
    scripts/deploy.py check local       refuse (exit 2, naming file and key) a missing env file, a value still
                                        holding a placeholder ("change-me"), a short password, or the same
                                        password used for two identities
    scripts/deploy.py apply local       check, then `kubectl apply -k` the overlay (and `serving/` with --serving)

Overlay names are folders under manifests/overlays/ (local, gpu) or a path to one.
"""
from __future__ import annotations

import argparse
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "manifests" / "overlays"
PLACEHOLDER = "change-me"
SECRET_KEY = re.compile(r"PASSWORD|SECRET")
MIN_SECRET = 16  # MinIO needs 8; the identities bootstrap 16


class DeployError(Exception):
    pass


def overlay_dir(name: str) -> Path:
    path = Path(name) if ("/" in name or Path(name).is_dir()) and not (OVERLAYS / name).is_dir() else OVERLAYS / name
    if not (path / "kustomization.yaml").is_file():
        raise DeployError(f"no overlay at {path} (expected one of: {', '.join(sorted(p.name for p in OVERLAYS.iterdir()))})")
    return path


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DeployError(f"{path}:{n}: not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def env_files(overlay: Path) -> list[Path]:
    """The env files the overlay needs: one per *.env.example next to its kustomization (serving/ excluded)."""
    return sorted(p.with_suffix("") for p in overlay.glob("*.env.example"))


def write_secrets(overlay: Path) -> list[Path]:
    """Create each missing env file from its example with random values; existing files are left alone."""
    written = []
    for env in env_files(overlay):
        if env.exists():
            continue
        example = env.with_suffix(".env.example")
        # keys issued elsewhere (a cloud's access key id) keep the file as the example, placeholders and all:
        # a random secret next to a real key id would only hide which file still needs editing
        generate = all(SECRET_KEY.search(k) for k, v in read_env(example).items() if PLACEHOLDER in v)
        lines = []
        for line in example.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if generate and sep and not line.lstrip().startswith("#") and PLACEHOLDER in value:
                value = secrets.token_urlsafe(24)
            lines.append(f"{key}{sep}{value}" if sep else line)
        env.write_text("\n".join(lines) + "\n", encoding="utf-8")
        env.chmod(0o600)
        written.append(env)
    return written


def check(overlay: Path) -> list[str]:
    """Every problem with the overlay's env files; empty when it may be deployed."""
    problems = []
    seen: dict[str, str] = {}
    for env in env_files(overlay):
        rel = env.relative_to(ROOT) if env.is_relative_to(ROOT) else env
        if not env.exists():
            problems.append(f"{rel} is missing: copy {env.name}.example and fill it in, "
                            f"or run scripts/deploy.py secrets {overlay.name}")
            continue
        values = read_env(env)
        missing = sorted(set(read_env(env.with_suffix(".env.example"))) - set(values))
        if missing:
            problems.append(f"{rel}: missing {', '.join(missing)}")
        for key, value in values.items():
            if PLACEHOLDER in value:
                problems.append(f"{rel}: {key} is still the example's placeholder ({value!r})")
            elif not value:
                problems.append(f"{rel}: {key} is empty")
            elif SECRET_KEY.search(key):
                if len(value) < MIN_SECRET:
                    problems.append(f"{rel}: {key} is shorter than {MIN_SECRET} characters")
                if value in seen:
                    problems.append(f"{rel}: {key} repeats the value of {seen[value]}: give every identity its own")
                seen.setdefault(value, f"{env.name}:{key}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["secrets", "check", "apply"])
    p.add_argument("overlay", help="local, gpu, or a path to an overlay folder")
    p.add_argument("--serving", action="store_true", help="apply: also the overlay's serving/ (needs model.env)")
    args = p.parse_args(argv)
    try:
        overlay = overlay_dir(args.overlay)
        if args.action == "secrets":
            for path in write_secrets(overlay):
                print(f"wrote {path}")
            left = check(overlay)
            for problem in left:
                print(f"still to fill in by hand: {problem}")
            return 0
        problems = check(overlay)
        if problems:
            raise DeployError("refusing to deploy " + str(overlay.relative_to(ROOT) if overlay.is_relative_to(ROOT)
                                                      else overlay) + ":\n  " + "\n  ".join(problems))
        print(f"{overlay.name}: env files complete, no placeholders")
        if args.action == "apply":
            for target in [overlay] + ([overlay / "serving"] if args.serving else []):
                subprocess.run(["kubectl", "apply", "-k", str(target)], check=True)
        return 0
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"deploy: error: {' '.join(exc.cmd)} failed with exit status {exc.returncode}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
