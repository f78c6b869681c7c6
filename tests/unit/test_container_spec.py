"""The container target's document rules, and the pieces of image build / docker pool set-up
that need no engine (the engine-backed behaviour is in tests/integration/test_container.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from flowforge.core.errors import SpecError
from flowforge.core.targets.container import ContainerTarget, memory_bytes
from flowforge.core.validation import load_workflow
from flowforge.image import debian_mirror
from flowforge.stack.docker_pool import docker_pool_defaults, pool_user
from flowforge.stack.settings import StackSettings as Settings


def doc(container: dict[str, Any], settings: dict[str, Any] | None = None,
        **job: Any) -> dict[str, Any]:
    return {"name": "boxed", "settings": settings or {},
            "jobs": [{"name": "work", "runtime": "bash", "script": "true",
                      "target": {"container": container}, **job}]}


def problems(document: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as info:
        load_workflow(document)
    return info.value.problems


def test_defaults_are_the_hardened_ones() -> None:
    target = load_workflow(doc({})).jobs[0].target
    assert target is not None and target.container is not None
    c = target.container
    assert (c.image, c.network, c.read_only, c.user, c.memory, c.pids_limit) == (
        None, "none", True, "65534:65534", "512m", 256)


def test_every_option_is_accepted() -> None:
    wf = load_workflow(doc({"image": "python:3.11", "memory": "1G", "cpus": 0.5,
                            "pids_limit": 64, "network": "host", "env": {"MODE": "x"},
                            "workdir": "/tmp", "user": "1000:1000", "read_only": False,
                            "timeout": 30}, settings={"allow_host_network": True}))
    c = wf.jobs[0].target.container  # type: ignore[union-attr]
    assert c is not None and c.memory == "1g" and c.network == "host" and c.cpus == 0.5


def test_host_network_needs_the_workflow_setting_and_names_the_job() -> None:
    [problem] = problems(doc({"network": "host"}))
    assert problem["job"] == "work"
    assert problem["field"] == "jobs[0].target.container.network"
    assert "allow_host_network" in problem["message"]


@pytest.mark.parametrize(("container", "field", "needle"), [
    ({"memory": "lots"}, "jobs[0].target.container.memory", "must be a size"),
    ({"memory": "1m"}, "jobs[0].target.container.memory", "minimum"),
    ({"network": "bridge"}, "jobs[0].target.container.network", "none"),
    ({"workdir": "relative"}, "jobs[0].target.container.workdir", "absolute"),
    ({"user": "root; rm"}, "jobs[0].target.container.user", "UID"),
    ({"pids_limit": 1}, "jobs[0].target.container.pids_limit", "greater"),
    ({"env": {"PREFECT_API_KEY": "x"}}, "jobs[0].target.container.env.PREFECT_API_KEY", "reserved"),
    ({"privileged": True}, "jobs[0].target.container.privileged", "Extra inputs"),
])
def test_bad_options_name_the_job_and_field(container: dict[str, Any], field: str,
                                            needle: str) -> None:
    found = problems(doc(container))
    assert [(p["field"], p["job"]) for p in found] == [(field, "work")], found
    assert needle in found[0]["message"]


def test_container_target_is_for_script_jobs() -> None:
    document = {"name": "boxed", "jobs": [
        {"name": "call", "type": "http", "url": "http://127.0.0.1:1/x",
         "target": {"container": {}}}]}
    [problem] = problems(document)
    assert problem["field"] == "jobs[0].target.container" and "script jobs" in problem["message"]


def test_memory_bytes() -> None:
    assert memory_bytes("128m") == 128 * 1024**2
    assert memory_bytes("2g") == 2 * 1024**3
    assert memory_bytes("4096") == 4096
    assert ContainerTarget(memory="64M").memory == "64m"


def test_debian_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n")
    assert debian_mirror((tmp_path,)) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb [arch=amd64] http://other.example/debian/ bookworm main\n")
    assert debian_mirror((one_line,)) == "http://other.example/debian"
    assert debian_mirror((tmp_path / "none",)) == "http://deb.debian.org/debian"


def test_docker_pool_runs_flows_in_the_runner_image_on_the_host_network(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    defaults = docker_pool_defaults(settings)
    assert defaults["image"] == "flowforge-runner:0.1.0"
    assert defaults["network_mode"] == "host" and defaults["image_pull_policy"] == "Never"
    project = str(settings.project)
    assert defaults["volumes"] == [f"{project}:{project}:ro"]
    assert docker_pool_defaults(Settings(home=tmp_path, runner_image="mine:1"))["image"] == "mine:1"


def test_docker_pool_flow_runs_are_hardened_and_not_root(tmp_path: Path) -> None:
    defaults = docker_pool_defaults(Settings(home=tmp_path))
    create = defaults["container_create_kwargs"]
    assert create["read_only"] is True and create["cap_drop"] == ["ALL"]
    assert create["security_opt"] == ["no-new-privileges"] and create["init"] is True
    assert create["pids_limit"] > 0 and "/tmp" in create["tmpfs"]
    assert defaults["mem_limit"] == defaults["memswap_limit"]
    assert defaults["env"]["HOME"].startswith("/tmp")  # writable under a read-only root
    # The project's owner reads the generated flows; a root-owned project gets nobody.
    project = tmp_path / "project"
    project.mkdir()
    os.chown(project, 1234, 2345)
    assert pool_user(project) == "1234:2345"
    os.chown(project, 0, 0)
    assert pool_user(project) == "65534:65534"
    assert create["user"] != "0:0" and not create["user"].startswith("0:")


def test_a_container_removed_while_listing_is_skipped() -> None:
    """docker-py lists, then inspects each container; one removed in between (a run ending,
    another reaper) made `leftovers` raise NotFound and failed `flowforge gc` (seen in CI).
    A real HTTP server on 127.0.0.1 plays an engine caught in that moment."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import docker

    from flowforge.runtime.executors.container import LABEL_RUN, leftovers

    class Engine(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server calls it by this name
            if self.path.split("?")[0].endswith("/containers/json"):
                body = json.dumps([{"Id": "gone", "Labels": {LABEL_RUN: "r"}},
                                   {"Id": "here", "Labels": {LABEL_RUN: "r"}}]).encode()
                self.send_response(200)
            elif "/containers/here/json" in self.path:
                body = json.dumps({"Id": "here", "Config": {"Labels": {LABEL_RUN: "r"}},
                                   "State": {"Status": "running"}}).encode()
                self.send_response(200)
            else:
                body = b'{"message": "No such container"}'
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{server.server_port}",
                                     version="1.41")
        assert [c.id for c in leftovers(client)] == ["here"]
    finally:
        server.shutdown()
        server.server_close()
