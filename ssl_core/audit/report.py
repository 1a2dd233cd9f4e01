"""An audit's verdict and its two renderings: a few lines per stage, or one JSON object."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ssl_core.audit.chain import StageAudit
from ssl_core.audit.images import Accounting

_SHORT = 12  # hash prefix shown in the terminal (JSON has them in full)


def _when(iso: str | None) -> str:
    try:
        return dt.datetime.fromisoformat(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (TypeError, ValueError):
        return str(iso)


def _short(h: str | None) -> str:
    if not h:
        return "-"
    sha, plus, rest = h.partition("+")
    return sha[:_SHORT] + plus + rest


@dataclass
class Audit:
    target: str
    keys: list[str]  # the stages the target names (several for ``students``)
    chain: list[StageAudit]  # targets and everything upstream, downstream first
    images: Accounting | None = None
    images_error: str | None = None  # why there is no accounting (a stage has not run)
    paths_out: str | None = None
    problems: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.problems = []
        for st in self.chain:
            if st.status == "not_run":
                self.problems.append(
                    f"{st.key} has not run: {st.lineage_file} not found "
                    f"(run `sslops {st.node.command(st.key)}`)"
                )
            for i in st.inputs:
                if i.status == "mismatch":
                    self.problems.append(
                        f"{st.key}: input '{i.name}' was {_short(i.recorded)} when {st.key} was "
                        f"built, but {i.file} ({i.asset}) is now {_short(i.current)}: {st.key} "
                        f"was not built from the current {i.asset}"
                    )
                elif i.status == "missing":
                    self.problems.append(
                        f"{st.key}: input '{i.name}' ({i.file}, from {i.asset}) no longer exists"
                    )
                elif i.status == "untraced":
                    self.problems.append(
                        f"{st.key}: input '{i.name}' is not in ssl_core/audit/graph.py (not checked)"
                    )

    @property
    def verdict(self) -> str:
        statuses = {i.status for st in self.chain for i in st.inputs}
        if statuses & {"mismatch", "missing"}:
            return "mismatch"
        return "incomplete" if self.problems else "consistent"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "stages": self.keys,
            "verdict": self.verdict,
            "consistent": self.verdict == "consistent",
            "problems": self.problems,
            "chain": [st.to_dict() for st in self.chain],
            "images": None if self.images is None else self.images.to_dict(),
            "images_error": self.images_error,
            "paths_out": self.paths_out,
        }

    def text(self) -> str:
        lines = [line for st in self.chain for line in _stage_lines(st)]
        checked = sum(i.status == "consistent" for st in self.chain for i in st.inputs)
        if self.verdict == "consistent":
            lines.append(
                f"verdict: consistent ({len(self.chain)} stage{'s' * (len(self.chain) > 1)} "
                f"up to {self.chain[-1].key}; "
                f"{checked} input hashes match their upstream outputs)"
            )
        else:
            lines.append(f"verdict: {self.verdict.upper()}")
            lines += [f"  - {p}" for p in self.problems]
        lines += _image_lines(self)
        return "\n".join(lines)


def _stage_lines(st: StageAudit) -> list[str]:
    head = f"{st.key:<16} {st.folder}  [{st.node.asset}]"
    if st.status == "input":
        return [
            f"{st.key:<16} {st.folder}  your data (read-only, no lineage of its own): "
            "ingest fingerprints it as pool_listing.csv"
        ]
    if st.status == "not_run":
        return [head, f"  NOT RUN   no {st.lineage_file} (run `sslops {st.node.command(st.key)}`)"]
    r = st.record
    took = f" ({r['duration_s']:.1f} s)" if r.get("duration_s") is not None else ""
    sections = ",".join(r.get("params") or {})
    drift = "" if st.params_match_file is not False else " params.yaml differs now"
    out = [
        head,
        f"  finished  {_when(r.get('finished_at'))}{took}  git {_short(r.get('git_sha'))}  "
        f"params {_short(r.get('params_hash'))} [{sections}]{drift}",
    ]
    if job := r.get("job"):
        out.append(
            f"  job       {job.get('scheduler')} {job.get('state')} in {job.get('wall_s')} s  "
            f"{job.get('job_dir')}"
        )
    for i in st.inputs:
        where = (
            ""
            if i.file is None
            else f"  {i.file} ({'own output' if i.asset == st.node.asset else i.asset})"
        )
        shown = {"external": "external (not checked)", "mismatch": "MISMATCH"}
        out.append(f"  input     {i.name:<16}{shown.get(i.status, i.status):<11}{where}")
    return out


def _image_lines(a: Audit) -> list[str]:
    if a.images is None:
        return [f"images: {a.images_error}"] if a.images_error else []
    acc = a.images
    counts = acc.counts()
    lines = [
        f"images: {counts[acc.used]} {acc.used} of {acc.rows} raw manifest rows "
        f"(paths relative to {acc.pool})"
    ]
    for reason, n in counts.items():
        extra = ""
        if reason == "quarantined" and n:
            extra = "  (" + ", ".join(f"{r} {k}" for r, k in acc.quarantine_reasons().items()) + ")"
        lines.append(f"  {reason:<20}{n:>7}{extra}")
    if a.verdict == "mismatch":
        lines.append("  NOTE: counted from the files as they are now, not as the lineage recorded")
    if acc.extra_paths:
        lines.append(f"  WARNING: {acc.extra_paths} listed images are not in the raw manifest")
    lines.append(
        f"  every row and its reason written to {a.paths_out}"
        if a.paths_out
        else "  every row and its reason: add --paths-out FILE.csv (or .parquet)"
    )
    return lines
