"""The SSH executor against real sshd instances (no Prefect): parallel servers, helpers over SFTP,
authentication, host keys, timeouts, cancel, a server going away, and the circuit breaker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowforge.connectors.servers import MemoryDirectory
from flowforge.connectors.ssh import connect
from flowforge.core.servers import Credential, ServerRecord
from flowforge.core.targets import SshTarget
from flowforge.runtime.executors.base import ScriptRequest, ScriptResult
from flowforge.runtime.executors.ssh import SshExecutor, SshPool
from flowforge.runtime.settings import WorkerSettings as Settings
from tests.fixtures.sshd import (
    PASSWORD,
    USER,
    ClientKey,
    Sshd,
    SshdFactory,
    alive,
    keygen,
    shared_dir,
    wait_for_file,
    wait_gone,
)

BASH_HELPERS = 'source "$FLOWFORGE_HELPERS/flowforge.sh"\n'


def record(name: str, server: Sshd, **extra: Any) -> ServerRecord:
    fields: dict[str, Any] = {"host_key": server.host_key, **extra}
    return ServerRecord(name=name, host="127.0.0.1", port=server.port, username=USER, **fields)


class Harness:
    """A pool over a MemoryDirectory; `run` executes one job on the named servers."""

    def __init__(self, key: ClientKey, **settings: Any) -> None:
        self.key = key
        self.directory = MemoryDirectory()
        self.pool = SshPool(self.directory, Settings(**{"ssh_connect_timeout": 5,
                                                        "ssh_kill_grace": 1, **settings}))
        self.lines: list[tuple[str, str]] = []

    def add(self, name: str, server: Sshd, credential: Credential | None = None,
            **extra: Any) -> None:
        self.directory.add(record(name, server, **extra),
                           credential or Credential(private_key=self.key.private))

    def run(self, servers: list[str], script: str, runtime: str = "bash",
            allow_partial: bool = False, **job: Any) -> ScriptResult:
        executor = SshExecutor(lambda: self.pool)
        return executor.run(ScriptRequest(name="job", runtime=runtime,  # type: ignore[arg-type]
                                          script=script, **job),
                            lambda stream, line: self.lines.append((stream, line)),
                            SshTarget(servers=servers, allow_partial=allow_partial))

    def outputs(self, result: ScriptResult) -> dict[str, Any]:
        return {n: s["output"] for n, s in result.output["servers"].items()}

    def errors(self, result: ScriptResult) -> dict[str, Any]:
        return {n: s["error"] for n, s in result.output["servers"].items()}


@pytest.fixture
def harness(ssh_client_key: ClientKey) -> Iterator[Harness]:
    h = Harness(ssh_client_key)
    yield h
    h.pool.close()


def test_two_servers_run_in_parallel_with_outputs_per_server(
        harness: Harness, sshd_pair: tuple[Sshd, Sshd]) -> None:
    a, b = sshd_pair
    harness.add("web1", a)
    harness.add("web2", b)
    script = BASH_HELPERS + 'sleep 2\nff_output "{\\"port\\": \\"$SSH_PORT_HINT\\", \\"dir\\": \\"$FLOWFORGE_JOB_DIR\\"}"\necho done-$SSH_PORT_HINT'
    harness.run(["web1"], "true")  # connect once, so both timings below reuse connections
    harness.run(["web2"], "true")
    started = time.monotonic()
    one = harness.run(["web1"], script, env={"SSH_PORT_HINT": "x"})
    single = time.monotonic() - started
    started = time.monotonic()
    both = harness.run(["web1", "web2"], script, env={"SSH_PORT_HINT": "x"})
    double = time.monotonic() - started
    assert one.error is None and both.error is None, both
    assert double < single * 1.5 + 0.5, (single, double)  # serial would be ~2x
    outputs = harness.outputs(both)
    assert set(outputs) == {"web1", "web2"}
    assert all(o["port"] == "x" and o["dir"].startswith("/tmp/flowforge-") for o in outputs.values())
    assert outputs["web1"]["dir"] != outputs["web2"]["dir"]
    assert both.output["servers"]["web1"]["exit_code"] == 0
    assert ("stdout", "[web1] done-x") in harness.lines and ("stdout", "[web2] done-x") in harness.lines
    for o in outputs.values():  # the private directory is removed afterwards
        assert not Path(o["dir"]).exists()


def test_helpers_over_ssh_input_output_condition_variables(
        harness: Harness, sshd_pair: tuple[Sshd, Sshd]) -> None:
    harness.add("web1", sshd_pair[0])
    job = {"input": {"inputs": {"n": 2}, "params": {"p": "q"}, "jobs": {}, "item": None,
                     "trigger": {"type": "manual"}},
           "event": {"workflow": "w", "job": "job", "run_id": "r1"},
           "variables": {"cursor": 7}}
    python = ("import flowforge_helpers as ff\n"
              "i = ff.input()\n"
              "ff.output({'n': i['inputs']['n'] * 2, 'p': i['params']['p'], "
              "'run': ff.event()['run_id'], 'cursor': ff.get_variable('cursor')})\n"
              "ff.set_condition(True)\n"
              "ff.set_variable('seen', 'yes')\n")
    result = harness.run(["web1"], python, runtime="python", **job)
    assert result.error is None, result
    assert harness.outputs(result)["web1"] == {"n": 4, "p": "q", "run": "r1", "cursor": 7}
    assert result.condition is True and result.variables_set == {"seen": "yes"}
    bash = BASH_HELPERS + 'ff_output "$(ff_input)"\nff_set_condition false'
    result = harness.run(["web1"], bash, **job)
    assert harness.outputs(result)["web1"]["params"] == {"p": "q"} and result.condition is False


def test_node_helpers_over_ssh(harness: Harness, sshd_pair: tuple[Sshd, Sshd]) -> None:
    harness.add("web1", sshd_pair[0])
    script = ('const ff = require("flowforge");\n'
              'ff.output({n: ff.input().inputs.n + 1, job: ff.event().job});\n')
    result = harness.run(["web1"], script, runtime="node",
                         input={"inputs": {"n": 1}, "params": {}, "jobs": {}},
                         event={"job": "job"})
    assert result.error is None, result
    assert harness.outputs(result)["web1"] == {"n": 2, "job": "job"}


def test_combine_ors_conditions_and_merges_variables() -> None:
    from flowforge.runtime.executors.ssh import ServerOutcome, combine

    outcomes = {"a": ServerOutcome(exit_code=0, condition=False, variables_set={"k": 1}),
                "b": ServerOutcome(exit_code=0, condition=True, variables_set={"k": 2, "j": 3}),
                "c": ServerOutcome(exit_code=0)}
    result = combine(outcomes, allow_partial=False)
    assert result.error is None and result.condition is True
    assert result.variables_set == {"k": 2, "j": 3}
    assert combine({"a": ServerOutcome(exit_code=0)}, False).condition is None
    down = {"a": ServerOutcome(error="x"), "b": ServerOutcome(error="y")}
    assert combine(down, allow_partial=True).error == "failed on 2 of 2 servers: a: x; b: y"


def test_env_values_are_data_never_shell_text(harness: Harness, sshd_pair: tuple[Sshd, Sshd],
                                              tmp_path: Path) -> None:
    harness.add("web1", sshd_pair[0])
    pwned = shared_dir(tmp_path) / "pwned"
    hostile = f"$(touch {pwned}); `touch {pwned}` ' \" \n; touch {pwned}"
    result = harness.run(["web1"], BASH_HELPERS + 'ff_output "$(printf %s "$V" | python3 -c "import json,sys; print(json.dumps(sys.stdin.read()))")"',
                         env={"V": hostile})
    assert result.error is None, result
    assert harness.outputs(result)["web1"] == hostile
    assert not pwned.exists()


def test_failing_server_does_not_stop_the_other_and_allow_partial(
        harness: Harness, sshd_pair: tuple[Sshd, Sshd]) -> None:
    a, b = sshd_pair
    harness.add("web1", a)
    harness.add("web2", b)
    # Only web2 fails: sshd tells each session which port it came in on.
    script = BASH_HELPERS + 'set -- $SSH_CONNECTION\necho oops >&2\n[ "$4" = "$PORT_FAIL" ] && exit 3\nff_output 1'
    failing = harness.run(["web1", "web2"], script, env={"PORT_FAIL": str(b.port)})
    assert failing.error is not None
    assert "failed on 1 of 2 servers: web2: exit code 3: oops" in failing.error
    servers = failing.output["servers"]
    assert servers["web1"] == {"exit_code": 0, "output": 1, "error": None}
    assert servers["web2"]["exit_code"] == 3
    partial = harness.run(["web1", "web2"], script, allow_partial=True,
                          env={"PORT_FAIL": str(b.port)})
    assert partial.error is None and partial.output["servers"]["web2"]["exit_code"] == 3


def test_password_auth_and_wrong_credentials(harness: Harness, sshd_pair: tuple[Sshd, Sshd],
                                             tmp_path: Path) -> None:
    a = sshd_pair[0]
    harness.add("pw", a, Credential(password=PASSWORD))
    assert harness.run(["pw"], BASH_HELPERS + "ff_output 42").output["servers"]["pw"]["output"] == 42
    harness.add("badpw", a, Credential(password="not-it"))
    other = tmp_path / "other"
    keygen(other)
    harness.add("badkey", a, Credential(private_key=other.read_text()))
    result = harness.run(["badpw", "badkey"], "true")
    errors = harness.errors(result)
    assert "authentication failed for user 'ffsshtest'" in errors["badpw"]
    assert "authentication failed" in errors["badkey"]
    assert PASSWORD not in str(result) and "not-it" not in str(result)


def test_encrypted_private_key_with_passphrase(harness: Harness, sshd_factory: SshdFactory,
                                              tmp_path: Path) -> None:
    path = tmp_path / "locked"
    public = keygen(path, passphrase="s3cret-phrase")
    server = sshd_factory.start([public])
    harness.add("locked", server, Credential(private_key=path.read_text(), passphrase="s3cret-phrase"))
    assert harness.run(["locked"], "true").error is None
    harness.add("wrongphrase", server, Credential(private_key=path.read_text(), passphrase="nope"))
    error = harness.errors(harness.run(["wrongphrase"], "true"))["wrongphrase"]
    assert "private key could not be read" in error


def test_unknown_and_changed_host_keys_fail_and_accept_new_pins(
        harness: Harness, sshd_pair: tuple[Sshd, Sshd]) -> None:
    a, b = sshd_pair
    harness.add("unknown", a, host_key=None)
    harness.add("changed", a, host_key=b.host_key)  # b's key, served by a: a re-keyed server
    harness.add("known-hosts-line", a, host_key=f"[127.0.0.1]:{a.port} {a.host_key}")
    result = harness.run(["unknown", "changed", "known-hosts-line"], "true", allow_partial=True)
    errors = harness.errors(result)
    assert "unknown host key" in errors["unknown"] and "SHA256:" in errors["unknown"]
    assert "host key mismatch" in errors["changed"]
    assert errors["known-hosts-line"] is None
    harness.add("tofu", a, host_key=None, host_key_policy="accept-new")
    assert harness.run(["tofu"], "true").error is None
    pinned = harness.directory.servers["tofu"][0].host_key
    assert pinned == a.host_key
    # Pinned: in a later run, the record refuses a different key behind the same name.
    harness.pool.close()
    harness.pool = SshPool(harness.directory, Settings(ssh_connect_timeout=5))
    harness.directory.servers["tofu"] = (record("tofu", b, host_key=pinned,
                                                host_key_policy="accept-new"),
                                         harness.directory.servers["tofu"][1])
    assert "host key mismatch" in harness.errors(harness.run(["tofu"], "true"))["tofu"]


def test_timeout_kills_the_remote_process_group(harness: Harness, sshd_pair: tuple[Sshd, Sshd],
                                                tmp_path: Path) -> None:
    harness.add("web1", sshd_pair[0])
    pids = shared_dir(tmp_path)
    script = (f'sleep 300 &\necho $! > {pids}/child\n'
              f'[ "$(cat "$FLOWFORGE_JOB_DIR/.pid")" = "$(ps -o pgid= $$ | tr -d " ")" ] && echo same-group\n'
              'trap "" TERM\nsleep 300\n')  # ignores SIGTERM: SIGKILL after the grace must follow
    started = time.monotonic()
    result = harness.run(["web1"], script, timeout=1.5)
    assert time.monotonic() - started < 15
    assert harness.errors(result)["web1"] == "timed out after 1.5s"
    assert ("stdout", "[web1] same-group") in harness.lines
    wait_gone(int((pids / "child").read_text()))


def test_leftover_background_processes_are_ended(harness: Harness, sshd_pair: tuple[Sshd, Sshd],
                                                 tmp_path: Path) -> None:
    harness.add("web1", sshd_pair[0])
    pids = shared_dir(tmp_path)
    result = harness.run(["web1"], f"sleep 300 >/dev/null 2>&1 &\necho $! > {pids}/bg\n")
    assert result.error is None
    wait_gone(int((pids / "bg").read_text()))


def test_cancel_kills_the_remote_job(harness: Harness, sshd_pair: tuple[Sshd, Sshd],
                                     tmp_path: Path) -> None:
    harness.add("web1", sshd_pair[0])
    pids = shared_dir(tmp_path)
    box: dict[str, ScriptResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault(
        "r", harness.run(["web1"], f"echo $$ > {pids}/main\nsleep 300\n")))
    thread.start()
    main = int(wait_for_file(pids / "main"))
    assert alive(main)
    harness.pool.close()  # what the run does when it is cancelled
    thread.join(20)
    assert not thread.is_alive()
    assert box["r"].error == "cancelled: the run was stopped"
    wait_gone(main)


def test_a_server_that_goes_away_mid_job(harness: Harness, sshd_factory: SshdFactory,
                                         sshd_pair: tuple[Sshd, Sshd], tmp_path: Path) -> None:
    doomed = sshd_factory.start()
    harness.add("doomed", doomed)
    harness.add("steady", sshd_pair[0])
    marker = shared_dir(tmp_path) / "started"
    box: dict[str, ScriptResult] = {}
    script = BASH_HELPERS + f'echo 1 > {marker}\nsleep 4\nff_output "\\"ok\\""'
    thread = threading.Thread(target=lambda: box.setdefault(
        "r", harness.run(["doomed", "steady"], script, allow_partial=True)))
    thread.start()
    wait_for_file(marker)
    doomed.kill()
    thread.join(30)
    result = box["r"]
    errors = harness.errors(result)
    assert errors["steady"] is None and harness.outputs(result)["steady"] == "ok"
    assert errors["doomed"] and "connection lost" in errors["doomed"], errors
    assert result.error is None  # allow_partial
    # The next job does not reuse the dead connection: it reports the server down.
    again = harness.errors(harness.run(["doomed"], "true"))["doomed"]
    assert "refused" in again


def test_circuit_breaker_opens_and_closes(ssh_client_key: ClientKey,
                                          sshd_factory: SshdFactory) -> None:
    harness = Harness(ssh_client_key, ssh_breaker_failures=2, ssh_breaker_cooldown=1.5)
    try:
        server = sshd_factory.start()
        harness.add("flaky", server)
        port = server.port
        server.stop()
        first = harness.errors(harness.run(["flaky"], "true"))["flaky"]
        second = harness.errors(harness.run(["flaky"], "true"))["flaky"]
        assert "connection refused" in first and "connection refused" in second
        state = harness.directory.breakers["flaky"]
        assert state.failures == 2 and state.is_open()
        started = time.monotonic()
        fast = harness.errors(harness.run(["flaky"], "true"))["flaky"]
        assert "circuit breaker open after 2 failed connects" in fast
        assert time.monotonic() - started < 0.5
        # The box comes back on the same port; after the cool-down one try goes through.
        revived = _restart_on(sshd_factory, server, port)
        time.sleep(1.6)
        assert harness.run(["flaky"], "true").error is None
        assert harness.directory.breakers["flaky"].failures == 0
        revived.stop()
    finally:
        harness.pool.close()


def _restart_on(factory: SshdFactory, old: Sshd, port: int) -> Sshd:
    import subprocess

    config = old.dir / "sshd_config"
    log = (old.dir / "sshd.log").open("ab")
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    revived = Sshd(old.dir, port, old.host_key, process)
    factory.started.append(revived)
    import socket

    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return revived
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)


async def test_connect_reports_refused_and_timeout(ssh_client_key: ClientKey) -> None:
    from flowforge.core.errors import SshError
    from tests.conftest import free_port

    closed = ServerRecord(name="closed", host="127.0.0.1", port=free_port(), username=USER)
    with pytest.raises(SshError) as info:
        await connect(closed, Credential(private_key=ssh_client_key.private), timeout=2)
    assert info.value.reason == "refused"
    import socket

    with socket.socket() as listener:  # accepts TCP but never speaks SSH
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        silent = closed.model_copy(update={"port": listener.getsockname()[1]})
        with pytest.raises(SshError) as info:
            await connect(silent, Credential(private_key=ssh_client_key.private), timeout=0.5)
    assert info.value.reason == "timeout" and "timed out after 0.5s" in info.value.message


def test_a_server_without_sftp_says_so(harness: Harness, sshd_factory: SshdFactory) -> None:
    """Hardened boxes sometimes drop the SFTP subsystem; asyncssh then reports only "Session
    request failed", which read as a dropped connection."""
    bare = sshd_factory.start(sftp=False)
    harness.add("bare", bare)
    result = harness.run(["bare"], "echo hi")
    error = harness.errors(result)["bare"]
    assert "SFTP is unavailable" in error and "connection lost" not in error, error
    assert result.error is not None and "SFTP is unavailable" in result.error
