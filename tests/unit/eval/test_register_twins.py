"""Register twins: the pairing rule, the hint when there is none, and the twin preset."""

from __future__ import annotations

from ssl_core.eval.register_twins import register_twins, twin_hint
from ssl_core.models.presets import get_config, list_presets, pinned_fields


def _cfg(preset: str, **kw) -> dict:
    return get_config(preset, **kw).to_dict()


def _models(**named: tuple[str, dict | None]) -> dict:
    return {name: {"role": role, "config": cfg} for name, (role, cfg) in named.items()}


def test_noreg_preset_is_tiny_student_without_registers_even_when_the_recipe_sets_them():
    recipe = {"num_register_tokens": 4, "img_size": 28, "patch_size": 4, "layerscale_init": 0.1}
    base = _cfg("tiny_student", **recipe)
    twin = _cfg("tiny_student_noreg", **{**recipe, **pinned_fields("tiny_student_noreg")})
    assert twin["num_register_tokens"] == 0 and base["num_register_tokens"] == 4
    assert {k: v for k, v in twin.items() if k != "num_register_tokens"} == {
        k: v for k, v in base.items() if k != "num_register_tokens"
    }
    assert pinned_fields("tiny_student") == {}


def test_pairs_models_equal_but_for_registers_with_registers_first():
    models = _models(
        raw_pixels=("raw_pixels", None),
        random_init_tiny=("random", _cfg("tiny_student", num_register_tokens=0)),
        student_noreg=("student", _cfg("tiny_student_noreg")),
        teacher=("teacher", _cfg("tiny", num_register_tokens=4)),
        student_tiny_student=("student", _cfg("tiny_student", num_register_tokens=4)),
    )
    # random init is never paired, the teacher has another width, the order is (with, without)
    assert register_twins(models) == [("student_tiny_student", "student_noreg")]


def test_no_pair_when_another_field_differs_or_both_have_registers():
    a = _cfg("tiny_student", num_register_tokens=4)
    other_depth = _cfg("tiny_student", num_register_tokens=0, depth=2)
    more_regs = _cfg("tiny_student", num_register_tokens=8)
    assert register_twins(_models(a=("student", a), b=("student", other_depth))) == []
    assert register_twins(_models(a=("student", a), b=("student", more_regs))) == []
    # each model in one pair at most
    c = _cfg("tiny_student", num_register_tokens=0)
    trio = _models(a=("student", a), b=("student", c), d=("student", more_regs))
    assert register_twins(trio) == [("a", "b")]


def test_hint_names_the_twin_preset_and_its_measured_cost():
    hint = twin_hint(["tiny_student"], list_presets(), {"tiny_student": 252.85})
    assert "`tiny_student_noreg`" in hint and "distill.students" in hint
    assert "about 253 s" in hint and "students@tiny_student_noreg" in hint
    unknown = twin_hint(["my_student"], list_presets(), {})
    assert "num_register_tokens=0" in unknown and "tiny_student_noreg" in unknown
