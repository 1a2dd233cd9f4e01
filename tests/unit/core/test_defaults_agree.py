"""Code defaults agree with ``params.yaml``, or are listed here with the reason they don't.

``params.yaml`` holds the measured, tuned values. A code default that disagrees with it is a
second, silent answer to the same question: whoever builds ``Params()`` or a section in code
(a test, a benchmark, a notebook) or leaves a key out of a params file gets an untuned run
without noticing. So every key is compared, recursively, between ``Params()`` (all defaults)
and the repository's ``params.yaml`` (validated with :func:`load_params`, so types are the
models' own: ``1`` and ``1.0``, lists and tuples compare equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ssl_core.config import Params, load_params

PARAMS_FILE = Path(__file__).resolve().parents[3] / "params.yaml"

#: Keys whose default may differ from params.yaml, and why. Reviewed one by one.
DIFFERENT_ON_PURPOSE = {
    # `sslops use-folder` / `use-demo` rewrite these four keys of params.yaml (ssl_core.use_data)
    # to point at the user's images or back at the demo; the defaults are the demo's.
    "data.source": "switched by sslops use-folder / use-demo",
    "data.labels": "switched by sslops use-folder / use-demo",
    "paths.pool": "switched by sslops use-folder / use-demo",
    "paths.labels": "switched by sslops use-folder / use-demo",
    # null means "the preset's patch size", which divides every image size a preset is built
    # for; params.yaml pins 7 for the 28 px demo (benchmarks/results/teacher_knn_long_cpu_p7.md).
    # A fixed default would reject any image_size it does not divide (16, 32, 224 in tests and
    # benchmarks that set image_size alone).
    "train.patch_size": "null = the preset's; params.yaml pins the demo's 7",
}

#: Keys that exist only in code (params.yaml does not set them), so their default is what
#: every run uses. Empty: params.yaml sets every key; a key added to the models must be added
#: to params.yaml, or listed here with a reason (and leave the list once params.yaml has it).
CODE_ONLY: dict[str, str] = {}


def _compare(
    default: BaseModel, tuned: BaseModel, raw: dict[str, Any] | None, prefix: str = ""
) -> tuple[list[str], set[str]]:
    """(``key: default X vs params.yaml Y`` lines, keys params.yaml does not set), recursively
    over the sections (pydantic models); free-form dict fields are compared as values."""
    diffs: list[str] = []
    absent: set[str] = set()
    raw = raw if isinstance(raw, dict) else {}
    for name in type(default).model_fields:
        key = prefix + name
        d, t = getattr(default, name), getattr(tuned, name)
        if isinstance(d, BaseModel):
            sub_diffs, sub_absent = _compare(d, t, raw.get(name), key + ".")
            diffs += sub_diffs
            absent |= sub_absent
        elif name not in raw:
            absent.add(key)
        elif d != t:
            diffs.append(f"{key}: default {d!r} vs params.yaml {t!r}")
    return diffs, absent


def _result() -> tuple[list[str], set[str]]:
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    return _compare(Params(), load_params(PARAMS_FILE), raw)


def test_code_defaults_agree_with_params_yaml():
    diffs, _ = _result()
    silent = [d for d in diffs if d.split(":")[0] not in DIFFERENT_ON_PURPOSE]
    assert not silent, (
        "code defaults (ssl_core/config.py, ssl_core/launch/settings.py) disagree with "
        "params.yaml; make the default params.yaml's value, or list the key in "
        "DIFFERENT_ON_PURPOSE with the reason:\n  " + "\n  ".join(silent)
    )


def test_code_only_defaults_are_the_reviewed_ones():
    _, absent = _result()
    assert absent - set(CODE_ONLY) == set(), (
        "keys params.yaml does not set (their code default is what runs): add them to "
        "params.yaml, or to CODE_ONLY after review"
    )
    assert set(CODE_ONLY) - absent == set(), "now set in params.yaml: remove from CODE_ONLY"


def test_exceptions_name_real_keys():
    """An exception for a key that no longer exists would hide nothing but mislead."""
    fields = set(Params().model_dump())
    for key in {*DIFFERENT_ON_PURPOSE, *CODE_ONLY}:
        section, _, field = key.partition(".")
        assert section in fields, key
        assert field in type(getattr(Params(), section)).model_fields, key


def test_the_comparison_reports_a_disagreement(tmp_path):
    """The check itself: a changed value and a missing key are both seen."""
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw["dedup"]["k"] = raw["dedup"]["k"] + 1
    del raw["eval"]["temperature"]
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    diffs, absent = _compare(Params(), load_params(f), raw)
    assert any(d.startswith("dedup.k: default 8 vs params.yaml 9") for d in diffs), diffs
    assert "eval.temperature" in absent
