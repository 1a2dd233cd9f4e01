"""The DVC stage graph and the Dagster asset graph are the same graph, and each node has one
name: its asset, its DVC stage and its ``sslops`` command (check stages: ``check_<name>``)."""

import subprocess
from pathlib import Path

import pytest
import yaml

from orchestration.definitions import defs as load_defs
from orchestration.graph import GRAPH, PIPELINE_FILES
from ssl_core.cli import STAGES, main
from ssl_core.config import load_params
from tests.integration.tiny_project import dvc_bin

REPO = Path(__file__).resolve().parents[2]


def _render(value: str, paths: dict) -> str:
    for k, v in paths.items():
        value = value.replace("${paths." + k + "}", v)
    return value


def _all_stages() -> dict[str, dict]:
    """Every stage of every pipeline file, named as DVC names them (``dir/dvc.yaml:name``); a
    ``foreach`` stage under its own name, its ``do`` body with ``${item}`` left in."""
    stages = {}
    for f in PIPELINE_FILES:
        for name, st in yaml.safe_load((REPO / f).read_text())["stages"].items():
            stages[name if f == "dvc.yaml" else f"{f}:{name}"] = st.get("do", st)
    return stages


def _render_item(value: str) -> str:
    """``${paths.students_dir}/${item}`` → inside ``${paths.students_dir}`` (any item)."""
    return value.replace("/${item}", "")


def _producer(dep: str, producer: dict[str, str]) -> str | None:
    """The stage whose output is ``dep`` or contains it (DVC links deps inside outputs)."""
    for out, name in producer.items():
        if dep == out or dep.startswith(out.rstrip("/") + "/"):
            return name
    return None


def _dvc_graph() -> tuple[dict[str, set[str]], dict[str, str]]:
    """Stage → upstream stages (from deps/outs), with check stages folded into their asset."""
    paths = load_params(REPO / "params.yaml").paths.model_dump()
    stages = _all_stages()
    producer: dict[str, str] = {}
    for name, st in stages.items():
        for out in st.get("outs", []):
            out = next(iter(out)) if isinstance(out, dict) else out
            producer[_render(_render_item(out), paths)] = name
    checked = {s.check_stage: s.dvc_stage for s in GRAPH if s.check}
    edges: dict[str, set[str]] = {}
    for name, st in stages.items():
        if name in checked:
            continue
        ups = set()
        for dep in st.get("deps", []):
            up = _producer(_render(dep, paths), producer)
            if up:
                ups.add(checked.get(up, up))
        edges[name] = ups
    return edges, {s.check_stage: s.dvc_stage for s in GRAPH if s.check}


def test_one_name_per_node():
    """Asset name == DVC stage name == CLI command, for every node."""
    stages = _all_stages()
    assets = {k.to_user_string() for k in load_defs().resolve_asset_graph().get_all_asset_keys()}
    assert assets == {s.name for s in GRAPH} == set(STAGES)
    for spec in GRAPH:
        assert spec.dvc_stage.rpartition(":")[2] == spec.name
        assert stages[spec.dvc_stage]["cmd"].split()[1] == spec.name
    assert list(STAGES) == [s.name for s in GRAPH]  # graph order


@pytest.mark.parametrize(
    ("old", "new"),
    [("train-teacher", "teacher"), ("import-demo", "raw_pool"), ("ingest", "manifest")],
)
def test_old_command_names_say_what_they_became(old, new, capsys):
    assert main(["--params", "params.yaml", old]) == 2
    assert f"'{old}' was renamed '{new}'" in capsys.readouterr().err


def test_hyphen_spelling_is_the_same_command():
    from ssl_core.cli import _parser
    from ssl_core.stages.names import canonical

    assert canonical(_parser().parse_args(["raw-pool"]).command) == "raw_pool"


def test_same_stages_and_edges():
    dvc_edges, _ = _dvc_graph()
    stage_of = {s.name: s.dvc_stage for s in GRAPH}
    graph = load_defs().resolve_asset_graph()
    dagster_edges = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        dagster_edges[stage_of[key.to_user_string()]] = {
            stage_of[p.to_user_string()] for p in node.parent_keys
        }
    assert dagster_edges == dvc_edges


def test_every_check_stage_gates_downstream_and_is_a_blocking_asset_check():
    stages = _all_stages()
    d = load_defs()
    checks = {
        k.name: k.asset_key.to_user_string() for k in d.resolve_asset_graph().asset_check_keys
    }
    for spec in GRAPH:
        if not spec.check:
            continue
        assert spec.check_stage in stages
        assert checks[f"gx_{spec.check}"] == spec.name
        out = (
            next(iter(stages[spec.check_stage]["outs"][0]))
            if isinstance(stages[spec.check_stage]["outs"][0], dict)
            else stages[spec.check_stage]["outs"][0]
        )
        consumers = [n for n, st in stages.items() if out in st.get("deps", [])]
        downstream = [s.dvc_stage for s in GRAPH if spec.name in s.deps]
        if downstream:
            assert consumers, f"no stage waits for {spec.check_stage}"
    for cdef in d.asset_checks:
        for spec in cdef.check_specs:
            assert spec.blocking, spec.key


def test_stage_commands_are_the_cli():
    stages = _all_stages()
    for spec in GRAPH:
        student = " --student ${item}" if spec.partitioned else ""
        assert stages[spec.dvc_stage]["cmd"] == f"sslops {spec.name}{student}"
        if spec.check:
            assert stages[spec.check_stage]["cmd"] == f"sslops check {spec.check}"


def test_demo_builder_writes_only_its_own_folders():
    """The demo stage's outputs are the fixed demo folders, never ``${paths.pool}``; no stage
    of any pipeline file has the pool or the labels as an output."""
    from ssl_core.config import DEMO_LABELS, DEMO_POOL

    demo = _all_stages()["demo/dvc.yaml:raw_pool"]
    assert demo["outs"] == [DEMO_POOL, DEMO_LABELS]
    for name, st in _all_stages().items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in st.get("outs", [])]
        assert not {"${paths.pool}", "${paths.labels}"} & set(outs), name


@pytest.mark.skipif(dvc_bin() is None, reason="DVC not installed (make setup)")
def test_dvc_reads_every_pipeline_file_as_the_tests_do():
    """DVC's own parser (templating, ``wdir``) accepts each pipeline file and finds the same
    stages as the YAML these tests read; ``dvc stage list`` only reads the files."""
    stages = _all_stages()
    for f in PIPELINE_FILES:
        out = subprocess.run(
            [dvc_bin(), "stage", "list", f], cwd=REPO, capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stderr
        listed = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
        students = load_params(REPO / "params.yaml").distill.students
        expected = {n for n in stages if (n.rpartition(":")[0] or "dvc.yaml") == f}
        expected = {  # foreach: one stage per item
            f"{n}@{s}" if n == "students" else n
            for n in expected
            for s in (students if n == "students" else [None])
        }
        assert listed == expected, f
