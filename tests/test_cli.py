"""The ``actionclip`` entry point: every area registers its commands, ``--help`` loads no heavy library, and user
errors print one line naming the cause."""
from __future__ import annotations

import subprocess
import sys

import pytest

import actionclip
from actionclip.cli import command_registrars, main


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from actionclip.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'timm', 'decord', 'mlflow', 'kfp') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_area_registers_its_commands(capsys):
    assert len(command_registrars()) == 5  # model, data, train, serving, and the pipeline's (an entry point)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in ("model", "data", "pretrain", "prompt", "finetune", "evaluate", "pipeline", "predict", "registry"):
        assert command in text


def test_model_commands(tmp_path, capsys):
    model = actionclip.create_model("tiny-8")
    model.save_pretrained(tmp_path / "m")
    assert main(["model", "convert", str(tmp_path / "m"), str(tmp_path / "converted"), "--fusion", "meanP"]) == 0
    assert actionclip.load(tmp_path / "converted").config.fusion.kind == "meanP"
    assert main(["model", "info", str(tmp_path / "converted")]) == 0
    assert '"format": "native"' in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert main(["model", "info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("actionclip model: error:") and "bad.pt" in err and "\n" not in err
