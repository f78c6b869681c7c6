"""The infrastructure files of docs/scale-out.md are checked, not only written: every
Kubernetes manifest against the Kubernetes schemas, the Compose file by `docker-compose
config`, and both against what the code they start accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flowforge import __version__

INFRA = Path(__file__).resolve().parents[2] / "infra"
MANIFESTS = sorted((INFRA / "k8s").glob("*.yaml"))


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}#{i}", doc) for path in MANIFESTS
            for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]


@pytest.mark.parametrize(("where", "doc"), _documents(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_kubernetes_manifest_is_valid(where: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    assert doc["metadata"].get("namespace", "flowforge") == "flowforge", where


def test_manifests_start_the_parts_the_cli_has() -> None:
    images, commands = set(), []
    for _, doc in _documents():
        for container in (doc.get("spec", {}).get("template", {}).get("spec", {})
                          .get("containers", [])):
            images.add(container["image"])
            commands.append(container["args"])
    assert images == {f"flowforge:{__version__}"}
    assert ["flowforge", "prefect-server", "--role", "services"] in commands
    assert any(c[:2] == ["flowforge", "api"] for c in commands)
    assert any(c[:3] == ["prefect", "worker", "start"] and "kubernetes" in c for c in commands)


def test_compose_file_is_valid(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose not installed"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{message}; scripts/system-deps.sh should have installed it")
        pytest.skip(message)
    result = subprocess.run(
        [binary, "-f", str(INFRA / "compose.yaml"), "--env-file",
         str(INFRA / "compose.env.example"), "config"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"postgres", "redis", "prefect-api-1", "prefect-api-2", "prefect-services",
            "api-1", "api-2", "worker-1", "worker-2"} == set(services)
    for name, service in services.items():
        if name in ("postgres", "redis"):
            continue
        assert service["image"] == f"flowforge:{__version__}", name
        assert service["environment"]["FLOWFORGE_REDIS_URL"] == "redis://redis:6379/0"
    missing = subprocess.run(
        [binary, "-f", str(INFRA / "compose.yaml"), "config"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD",
                                                               "PREFECT_AUTH")})
    assert missing.returncode != 0 and "set in compose.env" in missing.stderr
