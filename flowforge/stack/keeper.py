"""Keeping `flowforge up`'s children up: a child that dies is restarted, never the others.

One dead worker used to stop the API and the Prefect server with it. Now each death is logged
with its exit reason, what the child left behind is stopped (`orphans`), and the child is
started again after a backoff that doubles with each death in a row (1 s, 2 s, 4 s ... at most
`maximum`). A child that stayed up `stable` seconds is healthy again: its count starts over. A
child that died `give_up_after` times in a row is reported as failed and left down, so a
broken configuration does not spin in a tight loop; the others keep serving. Each child's
state goes into run/pids.json, where `GET /healthz` reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flowforge.stack.children import Child, PidFile
from flowforge.stack.orphans import adopted, flow_run_of, stop_adopted

RUNNING, RESTARTING, FAILED = "running", "restarting", "failed"


@dataclass(frozen=True)
class RestartPolicy:
    initial: float = 1.0
    maximum: float = 30.0
    stable: float = 60.0
    give_up_after: int = 5

    def delay(self, deaths: int) -> float:
        """Seconds before the restart that follows the `deaths`-th death in a row."""
        return float(min(self.initial * 2 ** max(deaths - 1, 0), self.maximum))


@dataclass
class ChildState:
    status: str = RUNNING
    started_at: float = 0.0
    deaths_in_a_row: int = 0
    restarts: int = 0
    restart_at: float | None = None
    last_exit: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"status": self.status, "restarts": self.restarts, "last_exit": self.last_exit}


@dataclass
class Keeper:
    """Call `tick()` every fraction of a second from the supervisor's loop."""

    children: list[Child]
    pids: PidFile
    say: Callable[[str], None]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    states: dict[str, ChildState] = field(default_factory=dict)
    #: Told the flow runs a dead child left running (and why), to mark them Crashed in Prefect.
    crashed: Callable[[list[str], str], None] | None = None

    def __post_init__(self) -> None:
        self.pids.states = self.states

    def state(self, child: Child) -> ChildState:
        if child.name not in self.states:
            self.states[child.name] = ChildState(started_at=self.clock())
        return self.states[child.name]

    def tick(self) -> None:
        changed = False
        for child in self.children:
            state = self.state(child)
            now = self.clock()
            if state.status == RESTARTING and state.restart_at is not None:
                if now >= state.restart_at:
                    self._restart(child, state, now)
                    changed = True
            elif state.status == RUNNING:
                if child.running():
                    if state.deaths_in_a_row and now - state.started_at >= self.policy.stable:
                        state.deaths_in_a_row = 0
                else:
                    self._died(child, state, now)
                    changed = True
        if changed:
            self.pids.write()

    def _died(self, child: Child, state: ChildState, now: float) -> None:
        state.last_exit = child.exit_reason()
        detail = f"{child.name} (pid {child.pid}) {state.last_exit}"
        child.stop(timeout=1)  # whatever is left of its process group
        known = [c.pid for c in self.children if c.pid is not None]
        runs = [r for r in (flow_run_of(pid, self.pids.markers) for pid in adopted(known))
                if r is not None]
        left = stop_adopted(known)
        if runs and self.crashed is not None:
            # After the processes are gone: a flow run ends itself Crashed on SIGTERM, with a
            # reason that does not name the dead child; this one replaces it.
            self.crashed(runs, f"{detail}; flowforge up stopped the processes the run left "
                               "behind")
        state.deaths_in_a_row += 1
        if left:
            detail += f"; stopped {len(left)} process(es) it left behind"
        if state.deaths_in_a_row > self.policy.give_up_after:
            state.status, state.restart_at = FAILED, None
            self.say(f"[red]{detail}; it died {state.deaths_in_a_row} times in a row, "
                     f"so it is not restarted (see {child.log_path}). The rest keep running.[/]")
            return
        delay = self.policy.delay(state.deaths_in_a_row)
        state.status, state.restart_at = RESTARTING, now + delay
        self.say(f"[yellow]{detail}; restarting it in {delay:g}s[/]")

    def _restart(self, child: Child, state: ChildState, now: float) -> None:
        child.restart()
        state.status, state.restart_at, state.started_at = RUNNING, None, now
        state.restarts += 1
        self.say(f"Restarted {child.name} (pid {child.pid}, restart {state.restarts})")

    def failed(self) -> list[str]:
        return [name for name, state in self.states.items() if state.status == FAILED]


__all__ = ["FAILED", "RESTARTING", "RUNNING", "ChildState", "Keeper", "RestartPolicy"]
