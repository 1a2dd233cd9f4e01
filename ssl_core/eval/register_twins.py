"""Register twins: two trained models whose backbones differ only in their register tokens.

Darcet et al. 2024 ("Vision Transformers Need Registers") show the effect of registers by
comparing a model with and without them: attention maps without artifacts, and no high-norm
patch tokens. The report pairs such models (:func:`register_twins`) and shows them side by side;
when the run has none it says how to get one (:func:`twin_hint`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REGISTERS = "num_register_tokens"
NOREG_SUFFIX = "_noreg"  # student preset without registers, see ssl_core.models.presets
TRAINED_ROLES = ("teacher", "student")  # random-init models are not compared


def _without_registers(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != REGISTERS}


def register_twins(models: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(with registers, without registers) pairs of trained models whose backbone configs are
    equal in every field but ``num_register_tokens``.

    Args:
        models: model name -> ``{"role": ..., "config": backbone config dict or None}`` (the
            report's ``metrics["models"]``); only ``teacher``/``student`` roles are paired.

    Returns:
        Pairs in model order; each model is in at most one pair (the first match).
    """
    trained = [
        (name, m["config"])
        for name, m in models.items()
        if m.get("role") in TRAINED_ROLES and m.get("config")
    ]
    pairs, used = [], set()
    for i, (a, ca) in enumerate(trained):
        for b, cb in trained[i + 1 :]:
            if a in used or b in used or _without_registers(ca) != _without_registers(cb):
                continue
            ra, rb = int(ca.get(REGISTERS, 0)), int(cb.get(REGISTERS, 0))
            if (ra > 0) == (rb > 0):
                continue  # both with or both without registers
            pairs.append((a, b) if ra > 0 else (b, a))
            used |= {a, b}
    return pairs


def twin_hint(students: list[str], presets: list[str], wall_s: Mapping[str, float | None]) -> str:
    """Markdown telling how to get a register twin when the run has none, and its cost.

    Args:
        students: ``distill.students`` of the run.
        presets: Known backbone presets (``ssl_core.models.presets.list_presets()``).
        wall_s: Student name -> its students-stage wall time in seconds (``summary.json``).
    """
    options = [(s, f"{s}{NOREG_SUFFIX}") for s in students if f"{s}{NOREG_SUFFIX}" in presets]
    if not options:
        return (
            "No model of this run has a register twin (a backbone equal in every field but "
            "`num_register_tokens`). Add a student preset with `num_register_tokens=0` next "
            "to one of yours in `ssl_core/models/presets.py` (as `tiny_student_noreg` is to "
            "`tiny_student`) and list it in `distill.students`."
        )
    s, twin = options[0]
    secs = wall_s.get(s)
    cost = (
        f"about {secs:.0f} s on this machine (what `{s}` took in the students stage, "
        "`summary.json` `wall_s`; without registers the sequence is a few tokens shorter)"
        if secs
        else "one more student training run"
    )
    return (
        f"No model of this run has a register twin. To see registers' effect side by side, "
        f"add `{twin}` to `distill.students` in `params.yaml` (the same backbone as `{s}` "
        f"with 0 register tokens). It costs one more `students@{twin}` DVC stage / Dagster "
        f"partition, {cost}; no other stage reruns but this report."
    )
