"""Free-space refusal (the probe patched) and the per-stage estimates being upper bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ssl_core import cli
from ssl_core.config import Params
from ssl_core.launch.settings import LaunchConfig
from ssl_core.stages import space
from ssl_core.stages.guard import check_space
from ssl_core.utils import diskspace
from ssl_core.utils.diskspace import EXIT_NO_SPACE, MARGIN_BYTES, NotEnoughSpace
from tests.conftest import write_folder_params


@pytest.fixture
def project(tmp_path, digits_pool, monkeypatch) -> Path:
    proj = tmp_path / "proj"
    write_folder_params(proj, digits_pool)
    monkeypatch.chdir(proj)
    return proj


def test_stage_refuses_to_start_without_space_then_runs_with_it(project, monkeypatch, capsys):
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 1000)
    assert cli.main(["--quiet", "manifest"]) == EXIT_NO_SPACE
    err = capsys.readouterr().err
    assert "not enough free space for sslops --quiet manifest" in err
    assert "writes up to" in err and "has 1000 B free" in err  # both numbers
    assert "64 pool files" in err  # how it was estimated
    assert "point paths.* in params.yaml at a larger disk" in err  # what to do
    assert not (project / "data/manifest").exists()  # nothing was written

    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 10**12)
    assert cli.main(["--quiet", "manifest"]) == 0  # the lock was released by the refusal
    assert (project / "data/manifest/raw_manifest.parquet").is_file()


def test_require_space_boundary(tmp_path, monkeypatch):
    need = 5 * 2**20
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: need + MARGIN_BYTES)
    assert (
        diskspace.require_space(tmp_path / "not/yet", need, "x", "sslops t") == need + MARGIN_BYTES
    )
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: need + MARGIN_BYTES - 1)
    with pytest.raises(NotEnoughSpace) as err:
        diskspace.require_space(tmp_path / "not/yet", need, "x", "sslops t")
    assert err.value.need == need and err.value.free == need + MARGIN_BYTES - 1


def test_real_probe_walks_up_to_an_existing_folder(tmp_path):
    assert diskspace.free_bytes(tmp_path / "a/b/c") == diskspace.free_bytes(tmp_path) > 0


def test_job_stage_on_a_cluster_is_not_checked_here(monkeypatch):
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 0)
    params = Params(launch=LaunchConfig(scheduler="kubernetes"))
    check_space(params, "ssl_core.stages.train_teacher", "sslops teacher")  # no raise
    with pytest.raises(NotEnoughSpace):
        check_space(Params(), "ssl_core.stages.train_teacher", "sslops teacher")


def test_embeddings_estimate_is_rows_times_dim_times_four_bytes(tmp_path):
    man = tmp_path / "data/manifest"
    man.mkdir(parents=True)
    pl.DataFrame({"path": [f"{i}.png" for i in range(100)]}).write_parquet(
        man / "raw_manifest.parquet"
    )
    params = Params.model_validate({"paths": {"manifest_dir": str(man)}})
    folder, need, what = space.estimate(params, "embed")
    dim = params.embed.image_size**2  # pixels
    assert need == 100 * (dim * 4 * 2 + 1024) and "100 images" in what
    # the matrix it bounds: float32, one row per image
    assert need >= np.zeros((100, dim), np.float32).nbytes


def test_training_estimate_bounds_the_model_and_its_checkpoint():
    import torch

    from ssl_core.models.heads import DINOHead
    from ssl_core.models.presets import build_backbone

    t = Params().train
    folder, need, what = space.estimate(Params(), "train_teacher")
    model = build_backbone(t.preset, img_size=t.image_size)
    head = DINOHead(model.embed_dim, t.out_dim, t.head_hidden_dim, t.head_bottleneck_dim)
    n = sum(p.numel() for m in (model, head) for p in m.parameters())
    # student + EMA teacher + AdamW's two moments, float32, twice while replaced, + exports
    assert need >= n * 4 * 4 * 2 + n * 4
    assert f"{n:,}" in what or "parameters x 4 B x 10" in what
    assert torch.float32.itemsize == 4


def test_every_stage_has_an_estimate(tmp_path, monkeypatch):
    from ssl_core.stages.names import STAGE_MODULES

    monkeypatch.chdir(tmp_path)  # default paths (data/...) that do not exist: zero rows
    for module in STAGE_MODULES.values():
        folder, need, what = space.estimate(Params(), module.rsplit(".", 1)[1])
        assert need >= 0 and what
