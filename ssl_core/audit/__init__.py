"""``sslops lineage``: audit an artifact from a terminal.

Which commit and parameters produced it, every input hash up to the raw pool checked against
what the upstream output hashes to now ("was this model trained on *that* curated set?"), and
which raw images went into it or were dropped, and why. See ``docs/lineage.md``.
"""

from __future__ import annotations

from pathlib import Path

from ssl_core.audit.chain import AuditError, resolve, walk
from ssl_core.audit.images import account, write_paths
from ssl_core.audit.report import Audit
from ssl_core.config import Params

__all__ = ["Audit", "AuditError", "audit"]


def audit(params: Params, target: str, paths_out: str | Path | None = None) -> Audit:
    """Audit ``target`` (an asset name, student name, or a path in an output folder).

    Raises:
        AuditError: the target names nothing (the message lists the valid names), or
            ``paths_out`` was asked for a target without image accounting.
        ValueError: ``paths_out`` is not a .csv/.parquet name.
    """
    keys = resolve(params, target)
    chain = walk(params, keys)
    images, error = None, None
    not_run = [st.key for st in chain if st.key in keys and st.status == "not_run"]
    if not_run:  # no images went into what does not exist
        error = f"{', '.join(not_run)} has not run"
    else:
        try:
            images = account(params, keys[0].partition("/")[0])
        except FileNotFoundError as e:
            error = str(e)
    written = None
    if paths_out is not None:
        if images is None:
            raise AuditError(
                f"--paths-out: no image accounting for {target!r}: {error or 'the raw pool'}"
            )
        written = str(write_paths(images, paths_out))
    return Audit(target, keys, chain, images, error, written)
