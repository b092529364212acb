"""Dask for batches (`minstf encode|decode ... --workers N | --scheduler ADDRESS`, batch.py) and
for `minstf eval` (evaluate.py): the client of a local cluster or of a running scheduler, and
the results of tasks as they finish.

Dask is optional (`pip install 'minstf[dask]'`): it is imported here only, when asked for. A
local worker is a process with one thread; its kernels and BLAS share the CPUs out
(`worker_threads`), through the variables below, set before the worker starts unless the
environment already sets them. Workers of a --scheduler cluster keep their own settings and
must see the batch's files at the same paths (a shared file system).
"""
import os
import time
from contextlib import contextmanager

from ..errors import MinstfError

THREAD_VARIABLES = ("MINSTF_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_threads(workers):
    """Threads of each of `workers` local worker processes: the CPUs shared out, at least one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // workers)


@contextmanager
def client(workers=None, scheduler=None):
    """None (no Dask: code in this process), or a Client of `scheduler`, or of a LocalCluster of
    `workers` processes; closed (and the cluster shut down) on the way out."""
    if not workers and not scheduler:
        yield None
        return
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise MinstfError("--workers and --scheduler need Dask: pip install 'minstf[dask]'") from None
    if scheduler:
        with Client(scheduler, timeout="10s") as remote:
            yield remote
        return
    threads = str(worker_threads(workers))
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **dict.fromkeys(THREAD_VARIABLES, threads)}
    saved = {name: os.environ.get(name) for name in environ}  # a nanny sets them in this process too
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):  # read when a worker starts
            local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, silence_logs=40,
                                 dashboard_address=":0", scheduler_kwargs={"dashboard": False})  # any free port
        with local, Client(local) as connected:
            yield connected
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def as_completed(dask_client, jobs, task, settings, killed):
    """(job, task(job, settings)) in the order the workers finish them; a job (batch.Job,
    evaluate.Task) has a `kind` and an `index`, its task's key. A task whose worker dies is run
    again on another by Dask; when its workers died too often (KilledWorker, Dask's
    `allowed-failures`), the pair is (job, killed(job, error)). Other exceptions propagate."""
    from dask.distributed import KilledWorker, as_completed

    run = f"{os.getpid()}-{time.time_ns()}"  # keys unique to this run: no result of another is reused
    futures = {dask_client.submit(task, job, settings, key=f"minstf-{job.kind}-{job.index}-{run}", pure=False): job
               for job in jobs}
    for future in as_completed(futures):
        job = futures.pop(future)
        try:
            yield job, future.result()
        except KilledWorker as err:
            yield job, killed(job, err)
