"""``sslops use-folder`` / ``sslops use-demo``: point ``params.yaml`` at a data source.

Edits only ``data.source``, ``data.labels``, ``paths.pool`` and ``paths.labels``, keeping every
comment and every other value, validates the result before writing it (atomically), and prints
what the run will do with the pool: file count and the ``auto`` sizes it implies. Neither
command reads an image or writes anywhere but ``params.yaml``.
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML

from ssl_core import sizing
from ssl_core.config import (
    DEMO_LABELS,
    DEMO_POOL,
    NO_LABELS_DIR,
    ConfigError,
    load_params,
)
from ssl_core.data.manifest import describe_pool
from ssl_core.utils.atomic import write_text


def _edit(params_file: Path, values: dict[tuple[str, str], str]) -> str:
    yaml = YAML()  # round-trip: comments and key order survive
    yaml.width = 4096
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    doc = yaml.load(params_file.read_text())
    for (section, key), value in values.items():
        doc.setdefault(section, {})[key] = value
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def _apply(params_file: Path, values: dict[tuple[str, str], str]) -> None:
    """Write the edited file only if the result validates (check by loading a temp copy)."""
    text = _edit(params_file, values)
    probe = params_file.with_name(f".{params_file.name}.check")
    try:
        probe.write_text(text)
        load_params(probe)  # validates, paths included (check_paths, same folder)
    except ConfigError as e:
        raise ConfigError(str(e).replace(str(probe), str(params_file))) from None
    finally:
        probe.unlink(missing_ok=True)
    write_text(params_file, text)


def _relative(p: Path, root: Path) -> str:
    """``p`` relative to the project ``root`` when inside it, else absolute."""
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def use_folder(params_file: Path, pool: str, labels: str = "auto") -> str:
    """Point ``params_file`` at the user's ``pool``; ``labels`` is auto | none | folders | a
    labels file / eval folder. Returns the plan to print."""
    root = params_file.resolve().parent
    pool_path = Path(pool).expanduser()
    pool_path = pool_path if pool_path.is_absolute() else (Path.cwd() / pool_path)
    if not pool_path.exists():
        raise ConfigError(f"pool {pool_path} does not exist")
    mode, labels_at = labels, NO_LABELS_DIR
    if labels not in ("auto", "none", "folders"):
        labels_file = Path(labels).expanduser().resolve()
        if not labels_file.exists():
            raise ConfigError(f"labels {labels_file} do not exist")
        mode, labels_at = "auto", _relative(labels_file, root)
    source = "parquet" if pool_path.suffix == ".parquet" else "folder"
    _apply(
        params_file,
        {
            ("data", "source"): source,
            ("data", "labels"): mode,
            ("paths", "pool"): _relative(pool_path.resolve(), root),
            ("paths", "labels"): labels_at,
        },
    )
    return plan(params_file)


def use_demo(params_file: Path) -> str:
    values = {
        ("data", "source"): "demo",
        ("data", "labels"): "auto",
        ("paths", "pool"): DEMO_POOL,
        ("paths", "labels"): DEMO_LABELS,
    }
    _apply(params_file, values)
    return "params.yaml: data.source demo (pool data/demo/pool, built from Fashion-MNIST)"


def plan(params_file: Path) -> str:
    """What the graph will do with the configured pool, before any image is decoded."""
    params = load_params(params_file)
    root = params_file.resolve().parent
    pool = root / params.paths.pool
    if params.data.source == "demo" and not pool.exists():
        return "params.yaml: data.source demo (data/demo/ is built by `sslops raw_pool`)"
    desc = describe_pool(pool, params.ingest)
    n = desc["files"]
    lines = [
        f"params.yaml: data.source {params.data.source}, pool {pool} ({n:,} candidate files, "
        f"{desc['bytes'] / 1e6:.1f} MB; read-only), labels {params.data.labels} "
        f"(paths.labels: {params.paths.labels})",
    ]
    if n >= 2:
        cur = sizing.auto_target_size(n)
        lines.append(
            f"if all {n:,} files are unique, decodable images: cluster levels "
            f"{sizing.auto_levels(n)}, curated {cur:,}, teacher "
            f"{sizing.auto_epochs(cur, sizing.TEACHER_IMAGES)} epochs, students "
            f"{sizing.auto_epochs(cur, sizing.STUDENT_IMAGES)} (exact values are resolved and "
            "logged after dedup)"
        )
    lines.append(sizing.rules_text())
    return "\n".join(lines)
