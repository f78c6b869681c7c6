"""`python -m flowforge.stack.runner --pool P [--name N] [--limit L]`: run the warm runner.

A `__main__` module on purpose: multiprocessing re-imports the parent's main module in each
child unless its name ends in `__main__`, and a child must start with nothing to import.
"""

from __future__ import annotations

import argparse
import signal

import anyio
from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS, PREFECT_WORKER_PREFETCH_SECONDS

from flowforge.stack.runner.worker import WarmWorker


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flowforge.stack.runner")
    parser.add_argument("--pool", required=True, help="the process work pool to serve")
    parser.add_argument("--name", default=None, help="the worker's name in Prefect")
    parser.add_argument("--limit", type=int, default=None,
                        help="flow runs at once (unset: no limit, as Prefect's worker)")
    return parser.parse_args(argv)


async def serve(pool: str, name: str | None, limit: int | None) -> None:
    """Serve until SIGTERM or SIGINT, then stop as Prefect's worker does (runs killed)."""
    worker = WarmWorker(name=name, work_pool_name=pool, limit=limit,
                        prefetch_seconds=PREFECT_WORKER_PREFETCH_SECONDS.value(),
                        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()))
    async with anyio.create_task_group() as group:
        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

        group.start_soon(stop_on_signal)
        await worker.start(printer=print)
        group.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    anyio.run(serve, args.pool, args.name, args.limit)


if __name__ == "__main__":
    main()
