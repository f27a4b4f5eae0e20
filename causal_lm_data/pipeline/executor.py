"""Where per-shard work runs: this machine's cores, or an existing Dask cluster.

A stage hands `map_shards` a pure, picklable function and one task per shard; the
results come back in task order, so outputs are identical whatever runs them.

- PIPELINE_WORKERS: processes on this machine (default: every available core).
- PIPELINE_DASK_SCHEDULER: the address of a Dask scheduler (`tcp://host:8786`, or a
  scheduler file's path); the shards then run on its workers, which must see the
  repository at the same path (a shared file system, as on a Slurm cluster).

Neither is a DVC param: they change how fast a stage runs, never what it writes.
"""

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from causal_lm_data.errors import UserError

# A Dask cluster whose workers are all gone would leave the stage waiting forever:
# with no worker for this long, the stage fails (workers that start late are fine).
WORKERLESS_SECONDS = 60.0
POLL_SECONDS = 5.0


def worker_count() -> int:
    value = os.environ.get("PIPELINE_WORKERS", "")
    if not value:
        return len(os.sched_getaffinity(0))
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"PIPELINE_WORKERS must be a whole number >= 1 (default: one per core), got '{value}'")
    return int(value)


def map_shards(function: Callable, tasks: Sequence) -> Iterator:
    """`function(task)` for every task, yielded in task order as each is ready."""
    scheduler = os.environ.get("PIPELINE_DASK_SCHEDULER", "")
    if scheduler:
        yield from _on_dask(scheduler, function, tasks)
        return
    workers = min(worker_count(), len(tasks))
    if workers <= 1:
        yield from map(function, tasks)  # in this process: no start-up cost, easy to debug
        return
    # spawn, not fork: tokenizer libraries hold threads that a fork would copy half-way.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(function, tasks)


def _on_dask(scheduler: str, function: Callable, tasks: Sequence) -> Iterator:
    try:
        from distributed import Client
    except ImportError:
        raise UserError("PIPELINE_DASK_SCHEDULER is set but Dask is not installed: pip install 'distributed'") from None
    address = {"scheduler_file": scheduler} if os.path.isfile(scheduler) else {"address": scheduler}
    try:
        client = Client(**address, timeout=30)
    except (OSError, TimeoutError) as error:
        raise UserError(
            f"cannot reach the Dask scheduler at {scheduler} ({error}); start it or unset PIPELINE_DASK_SCHEDULER"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERLESS_SECONDS)
        except TimeoutError:
            raise UserError(f"the Dask cluster at {scheduler} has no workers; start some: dask worker {scheduler}") from None
        # pure=False: every task runs, even if an equal one ran before on this cluster.
        futures = client.map(function, tasks, pure=False)
        for future in futures:
            yield _result(client, future, scheduler)


def _result(client, future, scheduler: str):
    """The future's result; a UserError if the cluster has had no worker for WORKERLESS_SECONDS.

    Dask re-runs the tasks of a worker that dies on the others, but waits forever when
    none is left: a stage must fail instead of hanging.
    """
    workerless = 0.0
    while True:
        try:
            return future.result(timeout=POLL_SECONDS)
        except TimeoutError:
            workerless = workerless + POLL_SECONDS if not client.scheduler_info()["workers"] else 0.0
            if workerless >= WORKERLESS_SECONDS:
                raise UserError(
                    f"every worker of the Dask cluster at {scheduler} left mid-run; start workers and run again"
                ) from None
