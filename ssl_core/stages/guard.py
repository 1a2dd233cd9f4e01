"""What every stage command does before its work: lock the artifact root, check free space.

``sslops <stage>`` and ``sslops check`` run inside :func:`stage_guard` (see ``ssl_core.cli``):

1. the artifact-root lock ``<data>/.sslops.lock`` (:mod:`ssl_core.utils.runlock`): a second run
   against the same data fails fast naming the holder, or waits with ``--wait``;
2. for a stage, its upper-bound output size (:mod:`ssl_core.stages.space`) against the free
   space of its output folder (:mod:`ssl_core.utils.diskspace`). Skipped for a job stage on a
   remote scheduler (kubernetes): the data volume is not mounted where the command runs.

The lock is taken by the command, never by the TorchX job it starts (the job does not inherit
it), so a job never waits for its own parent.
"""

from __future__ import annotations

import errno
import logging
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssl_core.config import Params, jobs_dir
from ssl_core.stages.names import JOB_STAGES, STAGE_MODULES
from ssl_core.utils.diskspace import NotEnoughSpace, human, require_space
from ssl_core.utils.runlock import LOCK_NAME, LockBusy, artifact_lock, wait_default

log = logging.getLogger(__name__)


class DiskFull(NotEnoughSpace):
    """The disk filled up while the stage wrote (ENOSPC/EDQUOT); its previous outputs stand."""


#: what :func:`stage_guard` raises; each has an ``exit_code`` (75: busy, 73: no space)
GUARD_ERRORS = (LockBusy, NotEnoughSpace)
#: stage module (last name) -> node, for the nodes whose work may run as a TorchX job
JOB_MODULES = {STAGE_MODULES[n].rsplit(".", 1)[-1]: n for n in JOB_STAGES}


def lock_file(params: Params) -> Path:
    """``<data>/.sslops.lock``: next to ``<data>/.jobs``, one per artifact root."""
    return jobs_dir(params.paths).parent / LOCK_NAME


def command_line(argv: list[str] | None) -> str:
    """``sslops <args>`` as typed (``sys.argv`` when ``argv`` is None), for the lock record."""
    return shlex.join(["sslops", *(sys.argv[1:] if argv is None else argv)])


def check_space(params: Params, module: str, command: str) -> None:
    """Refuse to start stage ``module`` (``ssl_core.stages.embed`` or ``embed``) when its
    output filesystem has less free space than its estimate (raises ``NotEnoughSpace``)."""
    from ssl_core.stages.space import estimate

    name = module.rsplit(".", 1)[-1]
    job = name in JOB_MODULES and params.launch.runs_as_job(JOB_MODULES[name])
    if job and not params.launch.on_host:
        log.info("%s: free space not checked here (runs on %s)", command, params.launch.scheduler)
        return
    folder, need, what = estimate(params, name)
    free = require_space(folder, need, what, command)
    log.info("%s: writes up to %s to %s; %s free", command, human(need), folder, human(free))


@contextmanager
def stage_guard(
    params: Params, command: str, module: str | None = None, wait_s: float | None = None
) -> Iterator[None]:
    """Hold the artifact-root lock (and, for a stage ``module``, check free space) inside.

    Args:
        params: the run's parameters (the artifact root is the parent of ``paths.*_dir``).
        command: the command line, recorded for whoever finds the lock held.
        module: the stage's module (``ssl_core.stages.embed``); None (``sslops check``): no
            space check.
        wait_s: seconds to wait for a busy lock; None: ``$SSLOPS_LOCK_WAIT`` or 0.

    Raises:
        LockBusy: another run holds the lock (exit code ``runlock.EXIT_BUSY``).
        NotEnoughSpace: too little free space (exit code ``diskspace.EXIT_NO_SPACE``);
            :class:`DiskFull` when a write inside failed with ENOSPC/EDQUOT.
    """
    wait = wait_default() if wait_s is None else wait_s
    with artifact_lock(lock_file(params), command, wait):
        if module is not None:
            check_space(params, module, command)
        try:
            yield
        except OSError as e:
            full = disk_full(command, e)
            if full is None:
                raise
            raise full from e


def disk_full(command: str, err: OSError) -> DiskFull | None:
    """``err`` as a :class:`DiskFull` with what to do, if it is ENOSPC/EDQUOT (else None)."""
    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = err.filename or "the data folder"
    return DiskFull(
        f"{command}: the disk filled up while writing {where} ({err.strerror}); the stage's "
        "previous outputs are unchanged (new outputs are swapped in only when complete). Free "
        "space there and rerun the same command.",
        Path(str(where)), 0, 0,
    )  # fmt: skip
