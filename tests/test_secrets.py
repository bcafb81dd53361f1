"""Security: YAML only through safe loading, checkpoints only as weights, the W&B key only read from the
environment or netrc and never written into a job's payload, credentials files never shipped.

The key is searched in every file a real sweep writes (and in its output) by
``test_faults.test_failing_sweep_writes_no_api_key`` (errors, divergence, retries) and
``test_report.test_no_api_key_in_any_file_kdseg_wrote`` (images, report); a training run's by
``test_tracking.test_train_run_logs_offline_and_never_writes_the_key``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tests.conftest import REPO

FAKE_KEY = "kdsegfake" + "c0ffee" * 6  # a configured "API key" that must never be written
PYTHON_SOURCES = sorted(
    p for folder in ("kdseg", "benchmarks", "experiments") for p in (REPO / folder).rglob("*.py")
)


# --------------------------------------------------------------------------- static guards


def unsafe_calls(source: str) -> list[str]:
    """``yaml.load``/``full_load``/``unsafe_load`` and unsafe loaders, ``torch.load`` without
    ``weights_only=True``, ``pickle``/``dill`` loads: where they are in ``source``."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("yaml", "torch", "pickle", "dill"):
            for alias in node.names:
                if alias.name in (
                    "load",
                    "loads",
                    "full_load",
                    "unsafe_load",
                    "Loader",
                    "UnsafeLoader",
                    "FullLoader",
                ):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            mod, attr = node.value.id, node.attr
            if mod == "yaml" and attr in (
                "load",
                "load_all",
                "full_load",
                "unsafe_load",
                "Loader",
                "FullLoader",
                "UnsafeLoader",
            ):
                found.append(f"line {node.lineno}: yaml.{attr}")
            if mod in ("pickle", "dill", "cloudpickle") and attr in ("load", "loads", "Unpickler"):
                found.append(f"line {node.lineno}: {mod}.{attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) == ("torch", "load")
        ):
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
    return found


def test_the_guard_finds_what_it_looks_for():
    bad = (
        "import yaml, torch, pickle\n"
        "yaml.load(open('x'))\n"
        "yaml.load(s, Loader=yaml.FullLoader)\n"
        "torch.load('a.pt')\n"
        "torch.load('a.pt', weights_only=False)\n"
        "pickle.loads(b'')\n"
        "from yaml import unsafe_load\n"
    )
    assert len(unsafe_calls(bad)) == 7
    good = "import yaml, torch\nyaml.safe_load('a: 1')\ntorch.load('a.pt', map_location='cpu', weights_only=True)\n"
    assert unsafe_calls(good) == []


def test_no_unsafe_yaml_torch_or_pickle_loads_in_the_code():
    assert len(PYTHON_SOURCES) > 40
    problems = {}
    safe_yaml = torch_loads = 0
    for path in PYTHON_SOURCES:
        text = path.read_text()
        found = unsafe_calls(text)
        if found:
            problems[str(path.relative_to(REPO))] = found
        safe_yaml += text.count("yaml.safe_load(")
        torch_loads += text.count("torch.load(")
    assert not problems, problems
    assert safe_yaml >= 1 and torch_loads >= 1  # the guard saw the real loads


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    """weights_only=True in practice: a pickled object (code on load) is a CheckpointError, never run."""
    import torch

    from kdseg.checkpoint import load_checkpoint
    from kdseg.errors import CheckpointError

    path = tmp_path / "evil.pt"
    torch.save({"student": {}, "payload": Path("/etc/passwd")}, path)  # any non-tensor class
    with pytest.raises(CheckpointError, match="refused to load|not a readable checkpoint"):
        load_checkpoint(path)
    torch.save({"student": {"w": torch.zeros(2)}, "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3


# ------------------------------------------------------------------------------- kdseg submit

CREDENTIAL_FILES = (
    ".env",
    ".env.local",
    "deploy.env",
    ".envrc",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".pypirc",
    ".git-credentials",
    "credentials.json",
    "gcp-credentials.json",
    "service-account-prod.json",
    "id_rsa",
    "id_ed25519.pub",
    "server.pem",
    "tls.key",
    ".aws/credentials",
    ".ssh/config",
    ".docker/config.json",
    ".kube/config",
    ".config/gcloud/application_default_credentials.json",
    ".config/wandb/settings",
    "wandb/settings",
    "experiments/.env",
    "search_spaces/.netrc",
)


@pytest.fixture
def project(tmp_path) -> Path:
    from tests.test_cluster import make_project

    space = make_project(tmp_path / "proj", tmp_path / "scenes")
    for rel in CREDENTIAL_FILES:
        path = tmp_path / "proj" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"api_key = {FAKE_KEY}\n")
    return space


def test_submit_never_ships_credentials_files(project, monkeypatch):
    from kdseg.cluster.submit import plan_job

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    plan = plan_job(project, out="/shared/runs", env=["A=1"])
    assert plan.files is not None and "search_spaces/space.yaml" in plan.files
    shipped = set(plan.files)
    leaked = [rel for rel in CREDENTIAL_FILES if rel in shipped]
    assert not leaked, leaked
    for rel in plan.files:  # nothing shipped holds the key
        assert FAKE_KEY not in (plan.working_dir / rel).read_text(errors="replace"), rel
    # the job's payload: entrypoint, runtime_env (its environment), metadata
    payload = json.dumps([plan.entrypoint, plan.runtime_env, plan.metadata], default=str)
    assert FAKE_KEY not in payload and plan.runtime_env["env_vars"]["A"] == "1"


@pytest.mark.parametrize(
    "item",
    ["WANDB_API_KEY", f"WANDB_API_KEY={FAKE_KEY}", "HF_TOKEN=x", "PGPASSWORD=x", "AWS_SECRET_ACCESS_KEY=x"],
)
def test_submit_refuses_credentials_in_the_job_environment(project, monkeypatch, item):
    from kdseg.cluster.submit import plan_job
    from kdseg.errors import ConfigError

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    name = item.partition("=")[0]
    with pytest.raises(ConfigError, match=f"--env {name}: looks like a credential") as err:
        plan_job(project, env=[item])
    assert FAKE_KEY not in str(err.value)
