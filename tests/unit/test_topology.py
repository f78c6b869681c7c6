"""The shape `flowforge up` starts, and the shapes it refuses before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowforge.stack.children import SupervisorError
from flowforge.stack.prefect_server import prefect_server_argv, prefect_server_env, redis_env
from flowforge.stack.settings import StackSettings
from flowforge.stack.topology import Topology, numbered
from flowforge.stack.workers import worker_argv

PG = "postgresql://ff@127.0.0.1/prefect"
REDIS = "redis://127.0.0.1:6379/0"


def settings(tmp_path: Path, **values: object) -> StackSettings:
    return StackSettings(home=tmp_path, api_port=8000, prefect_port=4200, **values)  # type: ignore[arg-type]


def test_the_default_is_one_of_each(tmp_path: Path) -> None:
    shape = Topology.of(settings(tmp_path), external_prefect=False)
    assert shape == Topology(prefect_ports=(4200,), split_services=False, api_ports=(8000,),
                             workers=1)
    assert numbered("worker", 0) == "worker" and numbered("worker", 2) == "worker-3"


def test_replicas_take_the_next_ports_and_clients_spread_over_them(tmp_path: Path) -> None:
    shape = Topology.of(settings(tmp_path, prefect_api_replicas=3, api_replicas=2, workers=4,
                                 prefect_database_url=PG, redis_url=REDIS,
                                 database_url="postgresql://ff@127.0.0.1/ff"), False)
    assert shape.prefect_ports == (4200, 4201, 4202) and shape.api_ports == (8000, 8001)
    assert shape.split_services
    assert [shape.prefect_url(i) for i in range(4)] == [
        "http://127.0.0.1:4200/api", "http://127.0.0.1:4201/api", "http://127.0.0.1:4202/api",
        "http://127.0.0.1:4200/api"]


@pytest.mark.parametrize(("values", "external", "says"), [
    ({"prefect_api_replicas": 2, "redis_url": REDIS}, False, "--prefect-database-url"),
    ({"prefect_api_replicas": 2, "redis_url": REDIS,
      "prefect_database_url": "sqlite:///x.db"}, False, "--prefect-database-url"),
    ({"prefect_api_replicas": 2, "prefect_database_url": PG}, False, "--redis-url"),
    ({"prefect_api_replicas": 1, "prefect_database_url": PG, "redis_url": REDIS}, True,
     "external Prefect"),
    ({"api_replicas": 2}, False, "--database-url"),
    ({"redis_url": "http://127.0.0.1:6379"}, False, "redis:// or rediss://"),
    ({"api_replicas": 3, "api_port": 4198, "database_url": "postgresql://ff@h/ff"}, False,
     "overlap"),
])
def test_shapes_that_cannot_work_are_refused(tmp_path: Path, values: dict[str, object],
                                             external: bool, says: str) -> None:
    with pytest.raises(SupervisorError, match=says):
        Topology.of(StackSettings(home=tmp_path, prefect_port=4200,
                                  **{"api_port": 8000, **values}),  # type: ignore[arg-type]
                    external_prefect=external)


def test_prefect_roles_and_redis(tmp_path: Path) -> None:
    assert "--no-services" in prefect_server_argv("api", 4201)
    assert "--no-services" not in prefect_server_argv("all", 4200)
    assert prefect_server_argv("services", 0)[-3:] == ["server", "services", "start"]
    env = prefect_server_env(settings(tmp_path, redis_url=REDIS), "u:p", 4201)
    assert {k: env[k] for k in redis_env(REDIS)} == redis_env(REDIS)
    assert env["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
    assert env["PREFECT_UI_API_URL"].endswith(":4201/api")
    assert "PREFECT_MESSAGING_BROKER" not in prefect_server_env(settings(tmp_path), None)


def test_worker_limit_and_name() -> None:
    argv = worker_argv("pool", "process", "w-1", 4)
    assert argv[-4:] == ["--limit", "4", "--name", "w-1"]
    assert "--limit" not in worker_argv("pool")
