"""Every DVC stage lists, as ``deps``, the project code its work runs.

DVC reruns a stage when one of its deps changes. A stage whose deps omit a module it imports
keeps serving a cached output after that module changed: the recorded result is no longer what
the code would compute. This test follows, by static analysis (``ast``), the ``ssl_core``
imports of the module each stage's ``sslops`` command dispatches to, transitively (imports
inside functions included, ``if TYPE_CHECKING:`` blocks excluded), and fails listing every
module file no dep covers (a folder dep covers every file under it).

Where the work starts:

* ``sslops <cmd>``: the module ``ssl_core.cli.STAGES[cmd]``;
* ``sslops check <suite>``: ``ssl_core/stages/checks.py``;
* the job stages (``ssl_core.stages.names.JOB_STAGES``: embeddings, teacher, students) run
  their module inside a TorchX job whose entry point is ``ssl_core/launch/job.py``, so that
  file is a start too (its ``importlib`` dispatch to the stage module is what this test models),
  and so is the module it runs instead of the stage module for some stages
  (``ssl_core.stages.names.JOB_ENTRY_MODULES``: the distributed clusters job).

What the CLI process does around the work (dispatch, submitting and watching a job, progress
bars) is listed in :data:`PLUMBING` with the reason it cannot change an output.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml

from orchestration.graph import PIPELINE_FILES
from ssl_core.cli import STAGES
from ssl_core.stages.names import JOB_ENTRY_MODULES, JOB_STAGES

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "ssl_core"
CHECKS_MODULE = "ssl_core/stages/checks.py"
JOB_ENTRY = "ssl_core/launch/job.py"

#: Project code a stage runs that cannot change what the stage writes, so no dep needs it.
#: Reviewed one by one; a file here is never required, wherever it is imported from.
PLUMBING = {
    "ssl_core/orchestration_settings.py": "when the pipeline runs, not what it computes",
    # argument parsing, logging set-up, dispatch (STAGES, modelled above), exit codes; prints
    # the stage's stats to stdout, writes no file.
    "ssl_core/cli.py": "dispatch only",
    # a testing hook: SIGKILLs the process at a named point when SSLOPS_FAILPOINT says so, else
    # returns; it never changes what a finished stage writes.
    "ssl_core/utils/failpoints.py": "kills the process in crash tests, else a no-op",
    # TorchX submit / poll / cancel and the job's log streaming; the job's own process (job.py
    # and the stage module) computes the outputs.
    "ssl_core/launch/launcher.py": "submits and watches the job",
    # the CLI side of a job stage: params snapshot, submit, wait, check that the job wrote its
    # lineage.json, then add a `job` entry (handle, state, timings: different every run anyway).
    "ssl_core/launch/stage_job.py": "submits the job, records its handle and timings",
    # the TorchX AppDef (command line, resources, env) of a job stage.
    "ssl_core/launch/component.py": "builds the job request",
    # labels and pod hardening of the Volcano job request on kubernetes.
    "ssl_core/launch/volcano.py": "edits the job request",
    # the `launch:` section (scheduler, image, namespace, resources); the project declares
    # these keys result-neutral (a stage lists under params: only the process counts that set
    # its global batch).
    "ssl_core/launch/settings.py": "where a job runs, not what it computes",
    # the table of node names → stage modules (dispatch, modelled above) and renamed commands.
    "ssl_core/stages/names.py": "names and dispatch only",
    # tqdm bars on stderr (line mode inside a job); yields the wrapped iterable unchanged.
    "ssl_core/utils/progress.py": "progress bars on stderr",
    # glibc mallopt at a training run's start: where freed memory goes, never a value.
    "ssl_core/utils/malloc.py": "allocator settings only",
}
# Not in PLUMBING on purpose:
# * ssl_core/lineage.py writes lineage.json into every output folder (an output: its fields,
#   input hashes and params are part of what a stage records), so every stage lists it, with
#   ssl_core/utils (atomic writes, hashing) that it and the stages use.
# * ssl_core/config.py validates params.yaml and holds the defaults of keys params.yaml does
#   not set (code-only defaults, see tests/unit/core/test_defaults_agree.py): both reach the
#   stages' computations, so every stage lists it.


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _module_file(name: str) -> Path | None:
    """``ssl_core.a.b`` → ``ssl_core/a/b/__init__.py`` or ``ssl_core/a/b.py`` (None: neither)."""
    base = REPO.joinpath(*name.split("."))
    for f in (base / "__init__.py", base.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _dynamic_import(node: ast.Call) -> bool:
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name in ("import_module", "__import__")


class _Imports(ast.NodeVisitor):
    """Names of the ``ssl_core`` modules one file imports (every import statement, at any
    depth, outside ``if TYPE_CHECKING:``), plus its dynamic imports it can't follow."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.names: set[str] = set()
        self.unfollowed: list[str] = []

    def _add(self, name: str) -> None:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            parts = name.split(".")
            self.names.update(".".join(parts[: i + 1]) for i in range(len(parts)))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # annotations only: never executed
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: from .x import y / from . import y
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        self._add(module)
        for alias in node.names:  # from pkg import submodule
            if _module_file(f"{module}.{alias.name}") is not None:
                self._add(f"{module}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        if _dynamic_import(node):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._add(arg.value)
            else:
                self.unfollowed.append(f"line {node.lineno}")
        self.generic_visit(node)


@cache
def _parse(path: Path) -> tuple[frozenset[str], tuple[str, ...], bool]:
    """(imported ssl_core module names, unfollowed dynamic imports, whether the file does
    anything when imported: a file of only a docstring, like an empty ``__init__.py``, is
    inert and needs no dep)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    v = _Imports(_module_name(path), path.name == "__init__.py")
    v.visit(tree)
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    return frozenset(v.names), tuple(v.unfollowed), bool(body)


def _closure(starts: list[Path]) -> tuple[set[Path], list[str]]:
    """Every project file the start files import, transitively (themselves included), and the
    dynamic imports met on the way that the test can't follow."""
    seen: set[Path] = set()
    todo = list(starts)
    problems: list[str] = []
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        names, unfollowed, _ = _parse(f)
        if unfollowed and _rel(f) != JOB_ENTRY:  # job.py's dispatch is modelled by the test
            problems.append(f"{_rel(f)}: dynamic import the test can't follow ({unfollowed})")
        for name in names:
            target = _module_file(name)
            if target is None:
                problems.append(f"{_rel(f)}: imports {name}, which is not a project file")
            else:
                todo.append(target)
    return seen, problems


def _stages() -> list[tuple[str, dict, Path]]:
    """(name as DVC names it, stage, the folder its paths are relative to) of every stage."""
    out = []
    for f in PIPELINE_FILES:
        path = REPO / f
        for name, st in yaml.safe_load(path.read_text())["stages"].items():
            st = st.get("do", st)  # foreach (students): every item runs the same code
            wdir = (path.parent / st.get("wdir", ".")).resolve()
            out.append((name if f == "dvc.yaml" else f"{f}:{name}", st, wdir))
    return out


STAGE_IDS = [s[0] for s in _stages()]


def _starts(cmd: str) -> list[Path]:
    """The files where ``cmd``'s work starts (see the module docstring)."""
    words = cmd.split()
    assert words[0] == "sslops", f"{cmd!r}: not an sslops command; the test can't follow it"
    if words[1] == "check":
        return [REPO / CHECKS_MODULE]
    assert words[1] in STAGES, f"{cmd!r}: not a stage command of ssl_core.cli.STAGES"
    starts = [_module_file(STAGES[words[1]])]
    if words[1] in JOB_STAGES:
        starts.append(REPO / JOB_ENTRY)
    if words[1] in JOB_ENTRY_MODULES:
        starts.append(_module_file(JOB_ENTRY_MODULES[words[1]]))
    return starts


def _code_deps(st: dict, wdir: Path) -> list[Path]:
    """The stage's literal (untemplated) deps, as absolute paths."""
    return [(wdir / d).resolve() for d in st.get("deps", []) if "${" not in d]


def _covered(f: Path, deps: list[Path]) -> bool:
    return any(f == d or f.is_relative_to(d) for d in deps)


@pytest.mark.parametrize("name", STAGE_IDS)
def test_deps_cover_the_code_the_stage_runs(name):
    _, st, wdir = next(s for s in _stages() if s[0] == name)
    files, problems = _closure(_starts(st["cmd"]))
    assert not problems, "\n".join(problems)
    deps = _code_deps(st, wdir)
    missing = sorted(
        _rel(f) for f in files if _parse(f)[2] and _rel(f) not in PLUMBING and not _covered(f, deps)
    )
    assert not missing, (
        f"stage {name} ({st['cmd']}) runs code its deps do not list, so a change there does "
        "not rerun it; add to its deps (or, if it cannot change an output, to PLUMBING with "
        "the reason):\n  " + "\n  ".join(missing)
    )


@pytest.mark.parametrize("name", STAGE_IDS)
def test_code_deps_exist_and_are_used(name):
    """Every literal dep exists; every dep inside ssl_core/ covers code the stage runs (a dep
    on code it doesn't run reruns it for nothing, and usually means a stale path)."""
    _, st, wdir = next(s for s in _stages() if s[0] == name)
    files, _ = _closure(_starts(st["cmd"]))
    deps = _code_deps(st, wdir)
    absent = [_rel(d) if d.is_relative_to(REPO) else str(d) for d in deps if not d.exists()]
    assert not absent, f"stage {name}: deps that do not exist: {absent}"
    unused = [
        _rel(d)
        for d in deps
        if d.is_relative_to(REPO / PACKAGE) and not any(_covered(f, [d]) for f in files)
    ]
    assert not unused, f"stage {name}: code deps it does not run: {unused}"


def test_plumbing_list_names_real_files():
    assert all((REPO / p).is_file() for p in PLUMBING), [
        p for p in PLUMBING if not (REPO / p).is_file()
    ]


def test_the_analysis_follows_imports():
    """The analysis itself: function-level and from-package imports are followed."""
    files, problems = _closure([REPO / "ssl_core/stages/checks.py"])
    rels = {_rel(f) for f in files}
    assert not problems
    # module-level `from ssl_core.quality import suites` → the submodule suites.py
    assert "ssl_core/quality/suites.py" in rels
    # transitively: checks → stages/curate → curation/sampling
    assert "ssl_core/curation/sampling.py" in rels
    # packages resolve to their __init__.py (inert when empty)
    assert "ssl_core/quality/__init__.py" in rels
    assert not _parse(REPO / "ssl_core/quality/__init__.py")[2]
