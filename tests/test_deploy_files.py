"""Static checks of what cannot run here (no Docker engine): the Dockerfile lints clean,
the compose file is valid Compose, and what they reference exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from app.experiments import parse
from app.scoring import resolve_version

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is missing: it comes with the dev extra"
    return path


def test_dockerfile_passes_hadolint():
    run = subprocess.run([tool("hadolint"), str(REPO / "Dockerfile")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_copies_what_exists_and_serves_a_shipped_model():
    text = (REPO / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--)(\S+)", text, flags=re.M):
        assert (REPO / source).exists(), source
    env = dict(re.findall(r"(BESTMATCH_MODEL_(?:NAME|VERSION))=(\S+)", text))
    model = resolve_version(REPO / "models", env["BESTMATCH_MODEL_NAME"],
                            env["BESTMATCH_MODEL_VERSION"])
    assert (model / "model.onnx").exists()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "models" not in ignored and ".venv" in ignored


def test_compose_file_is_valid_compose():
    compose = REPO / "deploy" / "compose.yaml"
    run = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                          str(compose)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    assert set(services) == {"opensearch", "redis", "bestmatch"}
    assert (compose.parent / services["bestmatch"]["build"]["context"] / "Dockerfile").exists()


def test_example_experiments_file_is_valid():
    config = parse((REPO / "deploy" / "config" / "experiments.yaml").read_text())
    assert config.experiments
