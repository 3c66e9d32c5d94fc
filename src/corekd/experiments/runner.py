"""Where units run: in this process, one after another (``corekd run``), in worker processes on this machine
(``local``) or as Ray tasks (``ray``).

A runner takes unit tasks (:func:`corekd.experiments.unit.run_unit`'s plain-data input) and hands back their
outcomes; the driver decides what is ready and writes every file. Every runner gives the same outcome for the same
task: a unit's numbers depend on its task only.

Local workers die with their driver: each asks the kernel for SIGKILL when its parent dies (Linux
``PR_SET_PDEATHSIG``) and also watches its parent's pid, so a driver killed by the OOM killer or ``kill -9``
leaves no worker behind holding memory and the caller's pipes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from corekd.errors import CorekdError
from corekd.experiments.unit import run_unit

BACKENDS = ("local", "ray")


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when ``parent`` (the driver) is gone."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent thread exits
    except (OSError, AttributeError):  # not Linux: the watchdog below does it
        pass
    if os.getppid() != parent:  # the driver died before the line above ran
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="corekd-parent-watch", daemon=True).start()


def _init_worker(threads: int, parent: int) -> None:
    import torch

    _die_with_parent(parent)
    torch.set_num_threads(threads)


class SequentialRunner:
    """Units run here, one after another, with per-epoch progress (``on_epoch``)."""

    name = "sequential"
    capacity = 1

    def __init__(self, on_epoch=None):
        self.on_epoch = on_epoch

    def submit(self, task: dict) -> Future:
        future: Future = Future()
        future.set_result(run_unit(task, on_epoch=self.on_epoch))  # an exception propagates: a run stops at once
        return future

    def wait(self, handles: list) -> list[tuple[object, object]]:
        return [(h, h.result()) for h in handles]

    def close(self, kill: bool = False, pending: list | None = None) -> None:
        return None


class LocalRunner:
    """``workers`` processes (spawned, one torch thread pool of ``threads`` each); one worker runs cells in this
    process, one after another."""

    name = "local"

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads, os.getpid()),
            )

    @property
    def capacity(self) -> int:
        return self.workers

    def submit(self, task: dict) -> Future:
        if self.pool is not None:
            return self.pool.submit(run_unit, task)
        future: Future = Future()
        try:
            future.set_result(run_unit(task))
        except Exception as exc:  # reported by the driver as this cell's failure, like a worker's
            future.set_exception(exc)
        return future

    def wait(self, handles: list) -> list[tuple[object, object]]:
        """At least one finished handle, with its result or its exception."""
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return [(h, h.exception() if h.exception() is not None else h.result()) for h in done]

    def close(self, kill: bool = False, pending: list | None = None) -> None:
        if self.pool is None:
            return
        if kill:  # interrupted: cancel what has not started and stop the running cells now
            self.pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():
                child.terminate()
        else:
            self.pool.shutdown(wait=True)


class RayRunner:
    """Cells as Ray tasks (``num_cpus`` = ``threads`` each) on a local Ray instance of ``workers`` x ``threads``
    CPUs, or on the running cluster at ``address``. On a CUDA ``device`` each task also reserves ``1 / workers``
    of a GPU (Ray hides the GPUs from tasks that reserve none), so ``workers`` cells share one GPU."""

    name = "ray"

    def __init__(self, workers: int, threads: int, address: str | None, device: str = "cpu"):
        try:
            import ray
        except ImportError:
            raise CorekdError("the Ray backend needs Ray: pip install 'corekd[cluster]'", field="--backend") from None
        self.ray, self.threads = ray, threads
        self.started = not ray.is_initialized()
        if self.started:
            options: dict[str, Any] = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
            try:
                if address:
                    ray.init(address=address, **options)
                else:
                    ray.init(num_cpus=workers * threads, **options)
            except Exception as exc:  # a wrong address, an unreachable head node
                where = f"the cluster at {address}" if address else "a local Ray instance"
                raise CorekdError(
                    f"could not start or reach {where}: {exc}", field="--address" if address else "--backend"
                ) from None
        cpus = int(ray.cluster_resources().get("CPU", workers * threads))
        self._capacity = max(1, cpus // threads)
        gpus = 1.0 / workers if device.startswith("cuda") else 0
        self.remote = ray.remote(run_unit).options(num_cpus=threads, num_gpus=gpus, max_retries=0)

    @property
    def capacity(self) -> int:
        return self._capacity

    def submit(self, task: dict):
        return self.remote.remote(task)

    def wait(self, handles: list) -> list[tuple[object, object]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in done:
            try:
                out.append((ref, self.ray.get(ref)))
            except self.ray.exceptions.RayTaskError as exc:  # the cell's own exception, re-raised by Ray
                out.append((ref, exc.as_instanceof_cause()))
            except Exception as exc:  # a worker that died
                out.append((ref, exc))
        return out

    def close(self, kill: bool = False, pending: list | None = None) -> None:
        if kill:
            for ref in pending or []:
                self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


def make_runner(name: str, workers: int, threads: int, address: str | None, device: str = "cpu"):
    if name not in BACKENDS:
        raise CorekdError(f"unknown backend '{name}' (expected {' or '.join(BACKENDS)})", field="--backend")
    if workers < 1 or threads < 1:
        raise CorekdError("expected at least 1", field="--workers" if workers < 1 else "--threads")
    if address and name != "ray":
        raise CorekdError("--address names a Ray cluster: use it with --backend ray", field="--address")
    return LocalRunner(workers, threads) if name == "local" else RayRunner(workers, threads, address, device)
