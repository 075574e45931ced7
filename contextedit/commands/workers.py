"""Where ``batch`` jobs run: local worker processes (one per GPU, each pinned to its ``cuda:i``,
or one on the CPU) or Ray tasks (one GPU each where the cluster has GPUs, else one CPU).

Both runners check what they need (Ray installed, the cluster reachable) when called, before any
job starts, and return an iterator of ``(job, record)`` in the order jobs finish, so the caller
writes each record at once. Workers run quiet: the one progress bar is the caller's.
"""

from __future__ import annotations

import os
from typing import Iterator

from ..errors import Interrupted, UsageError
from .jobs import Job, run_job

_GPU: int | None = None  # the GPU of this worker process, set by _start_worker


def local_runner(jobs: list[Job], out: str, workers: int | None = None) -> Iterator[tuple[Job, dict]]:
    import torch

    gpus = torch.cuda.device_count()
    if workers is not None and workers < 1:
        raise UsageError(f"`workers` must be at least 1 (got {workers})")
    workers = min(workers or max(gpus, 1), len(jobs))
    # Workers split this process's CPU threads: oversubscribed OpenMP threads spin against each other.
    threads = max(1, torch.get_num_threads() // max(workers, 1))
    return _local(jobs, out, workers, gpus, threads) if jobs else iter(())


def _local(jobs: list[Job], out: str, workers: int, gpus: int, threads: int) -> Iterator[tuple[Job, dict]]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # CUDA cannot be forked; spawn also starts each worker clean
    slots = ctx.Queue()
    for i in range(workers):
        slots.put(i)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=(slots, gpus, threads))
    try:
        pending = {pool.submit(_local_job, job, out): job for job in jobs}
        while pending:
            # with a timeout: a Ctrl-C caught by another thread is raised here within a second
            done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), _result(future.result)
    except BaseException:  # Ctrl-C (or the caller stopped): end the running jobs now, record nothing of them
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _start_worker(slots, gpus: int, threads: int) -> None:
    """A worker takes one slot for its life: GPU ``slot % gpus`` (or the CPU) and its share of the
    CPU threads. It ignores Ctrl-C: the parent ends it, so no idle worker prints a traceback."""
    import signal

    import torch

    global _GPU
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    slot = slots.get()
    _GPU = slot % gpus if gpus else None
    if _GPU is not None:
        torch.cuda.set_device(_GPU)  # stray allocations on "cuda" land on this worker's GPU too
    quiet_worker()


def pinned_device(device: str | None, gpu: int | None) -> str | None:
    """The device a job runs on in the worker of ``gpu``: ``auto`` and ``cuda`` become ``cuda:i``;
    an explicit ``cpu`` or ``cuda:N`` is the user's choice and stays."""
    if gpu is not None and (device or "auto").strip().lower() in ("auto", "cuda"):
        return f"cuda:{gpu}"
    return device


def _local_job(job: Job, out: str) -> dict:
    device = pinned_device(job.options.get("device"), _GPU)
    if device is not None:
        job.options["device"] = device
    return run_job(job, out)


def quiet_worker() -> None:
    """No warnings, library logs or download bars from a worker: its job's record says how it went."""
    import logging

    from ..progress import quiet_libraries

    quiet_libraries()
    logging.getLogger("contextedit").setLevel(logging.ERROR)


def _result(get) -> dict:
    try:
        return get()
    except (KeyboardInterrupt, Interrupted):  # a worker's Ctrl-C stops the batch; its text (resume …) is the job's
        raise KeyboardInterrupt from None
    except Exception as exc:  # noqa: BLE001 — a worker that died (killed, out of memory): that job failed, not the batch
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return {"status": "failed", "reason": f"worker failed: {type(exc).__name__}" + (f": {lines[-1].strip()}" if lines else "")}


def ray_runner(jobs: list[Job], out: str, address: str | None = None) -> Iterator[tuple[Job, dict]]:
    """Jobs as Ray tasks on the cluster at ``address`` (else $RAY_ADDRESS, else a local Ray started
    for this batch and stopped after it; an already initialised Ray in this process is used as is)."""
    try:
        import ray
    except ImportError:
        raise UsageError('`ray` needs Ray: pip install -e ".[cluster]"') from None
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"cannot reach the Ray cluster at {address}: {' '.join(str(exc).split())}; check "
                             "`ray_address` (or RAY_ADDRESS), or leave it out to start a local Ray") from None
    return _ray(ray, jobs, out, started)


def _ray_job(job: Job, out: str) -> dict:
    quiet_worker()  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU: "auto" is that GPU
    return run_job(job, out)


def _ray(ray, jobs: list[Job], out: str, started: bool) -> Iterator[tuple[Job, dict]]:
    pending = {}
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=0)(_ray_job)
        pending = {task.remote(job, out): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                yield pending.pop(ref), _result(lambda: ray.get(ref))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
