"""``averaging.reconstruct`` on the tiny preset with every truth given: the map it makes is the simulator's oracle
map, and it matches the true hexamer map (not its mirror image)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_series import series_without_ctf, true_tiny_series
from tomoforge.io.mrc import read_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import ParticleSet, TiltSeries, save_json
from tomoforge.simulate.oracle import envelope_mask
from tomoforge.simulate.scoring.maps import fourier_shell_correlation
from tomoforge.steps._artifacts import write_tilt_series
from tomoforge.workflow import Project, StepFailedError, run_step

BOX = 26  # the true map's box at the tiny preset's 10 Å pixel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path, Path, TiltSeries]:
    """Project, truth, a ``tilt_series`` folder (true alignment and CTF) and a ``particles`` folder (true poses)."""
    root = tmp_path_factory.mktemp("averaging")
    project = Project.init(root / "project")
    truth, series = true_tiny_series(root / "data", project)
    folder = root / "tilt_series"
    folder.mkdir()
    os.link(series.stack_file, folder / "TS_01.mrc")
    series = series.model_copy(update={"stack_file": folder / "TS_01.mrc"})
    write_tilt_series(folder, series)
    particles = root / "particles"
    particles.mkdir()
    save_json(
        read_relion_particles(truth / "relion5" / "particles.star").particles, particles / "particles.json"
    )
    return project, truth, folder, particles, series


def _map(folder: Path, name: str = "map") -> torch.Tensor:
    return torch.from_numpy(np.array(read_mrc(folder / f"{name}.mrc").data, dtype=np.float64))


def test_the_map_matches_the_true_map_and_not_its_mirror(
    tiny: tuple[Project, Path, Path, Path, TiltSeries],
) -> None:
    project, truth, series, particles, _ = tiny
    result = run_step(
        project,
        "averaging.reconstruct",
        {"box_size_px": BOX, "symmetry": "C6"},
        {"particles": particles, "tilt_series": series},
    )
    out = result.outputs["map"].path
    record = json.loads((out / "reconstruction.json").read_text())
    assert (record["particles"], record["views"], record["views_outside"]) == (62, 558, 0)
    assert record["pixel_size_angstrom"] == 10.0 and record["resolution_angstrom"] is not None
    true_map = _map(truth / "average")
    envelope = envelope_mask(true_map, pixel_size_angstrom=10.0)
    made = _map(out)
    fsc = fourier_shell_correlation(made, true_map, mask=envelope)[1:11]
    mirrored = fourier_shell_correlation(made, torch.flip(true_map, dims=(0,)), mask=envelope)[1:11]
    assert float(fsc.mean()) > 0.75, fsc
    assert float(fsc.mean()) > float(mirrored.mean()) + 0.3, (fsc, mirrored)
    # The half maps are independent reconstructions of the same particles' halves and agree to Nyquist here.
    half = fourier_shell_correlation(_map(out, "half1"), _map(out, "half2"))
    assert float(half[1:8].min()) > 0.5
    csv = (out / "fsc.csv").read_text().splitlines()
    assert csv[0] == "shell,frequency_per_angstrom,resolution_angstrom,fsc" and len(csv) == BOX // 2 + 2
    assert (out / "map_slices.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fsc.svg").read_text().startswith("<svg")


def test_max_dose_binning_and_the_cli(
    tiny: tuple[Project, Path, Path, Path, TiltSeries],
    tmp_path: Path,
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    _, _, series, particles, _ = tiny
    project = Project.init(tmp_path / "project")
    project.close()  # the CLI opens the project itself
    code, out, err = cli(
        "run", "averaging.reconstruct", "-p", str(project.root), "--input", f"particles={particles}",
        "--input", f"tilt_series={series}", "--box-size-px", "12", "--binning", "2",
        "--max-dose-e-per-angstrom2", "0.001",
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (record,) = (project.root / "runs").glob("*/map/reconstruction.json")
    made = json.loads(record.read_text())
    assert (
        made["views"] == 62 and made["pixel_size_angstrom"] == 20.0
    )  # only the first tilt has no pre-exposure
    assert read_mrc(record.parent / "map.mrc").data.shape == (12, 12, 12)


def test_bad_inputs_are_named(tiny: tuple[Project, Path, Path, Path, TiltSeries], tmp_path: Path) -> None:
    project, _, series_folder, particles, series = tiny
    stray = tmp_path / "stray"
    stray.mkdir()
    one = ParticleSet.model_validate_json((particles / "particles.json").read_text())
    moved = one.model_copy(
        update={"particles": [p.model_copy(update={"ts_id": "TS_99"}) for p in one.particles[:2]]}
    )
    save_json(moved, stray / "particles.json")
    with pytest.raises(StepFailedError, match="TS_99"):
        run_step(project, "averaging.reconstruct", {}, {"particles": stray, "tilt_series": series_folder})
    no_ctf = series_without_ctf(tmp_path / "no_ctf", series)
    with pytest.raises(StepFailedError, match="ctf.estimate"):
        run_step(project, "averaging.reconstruct", {}, {"particles": particles, "tilt_series": no_ctf})


def test_half_sets_alternate_or_by_whole_group(tiny: tuple[Project, Path, Path, Path, TiltSeries]) -> None:
    from tomoforge.steps._particle_views import particle_table

    project, _, series_folder, particles, _ = tiny
    one = ParticleSet.model_validate_json((particles / "particles.json").read_text())
    labels = ["b", "a", "c", "a", "b", "c"]
    grouped = one.model_copy(
        update={
            "particles": [
                p.model_copy(update={"group": g}) for p, g in zip(one.particles, labels, strict=False)
            ]
        }
    )
    grouped = grouped.model_copy(update={"particles": grouped.particles[:6]})
    halves = particle_table(grouped, {"TS_01"}, {}, "by_group")["TS_01"][2].tolist()
    assert halves == [2, 1, 1, 1, 2, 1]  # groups a, b, c → halves 1, 2, 1
    assert particle_table(grouped, {"TS_01"}, {}, "alternate")["TS_01"][2].tolist() == [1, 2, 1, 2, 1, 2]
    single = one.model_copy(
        update={"particles": [p.model_copy(update={"group": "1"}) for p in one.particles]}
    )
    folder = particles.parent / "single_group"
    folder.mkdir(exist_ok=True)
    save_json(single, folder / "particles.json")
    with pytest.raises(StepFailedError, match="two groups"):
        run_step(
            project, "averaging.reconstruct", {"half_sets": "by_group"},
            {"particles": folder, "tilt_series": series_folder},
        )  # fmt: skip
