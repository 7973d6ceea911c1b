"""``averaging.postprocess`` on synthetic half maps of a designed resolution: the engine run finds it, writes the
RELION-style outputs, and names bad inputs; the CLI runs it with a given B-factor.

The half maps are one stationary Gaussian signal whose power per shell ``r`` is
``S(r) = 10⁵·exp(−(r/2.5)²) + 18·exp(−r/4)`` plus independent unit white noise each, so their expected FSC is
``S / (1 + S)``: 0.143 at shell 18.7 of a 48-voxel box, 5.12 Å at 2 Å per voxel (see
``tests/averaging/test_postprocess.py`` for the kernel's own checks on such maps).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.averaging import fsc_resolution_angstrom, shell_frequencies_per_angstrom
from tomoforge.fourier import fftfreq_grid
from tomoforge.io.mrc import read_mrc, write_mrc
from tomoforge.workflow import Project, StepFailedError, run_step

N, PIXEL = 48, 2.0


def _signal_power(r: torch.Tensor) -> torch.Tensor:
    return 1e5 * torch.exp(-((r / 2.5) ** 2)) + 18.0 * torch.exp(-r / 4.0)


def _designed_resolution() -> float:
    power = _signal_power(torch.arange(N // 2 + 1, dtype=torch.float64))
    return fsc_resolution_angstrom(power / (1 + power), shell_frequencies_per_angstrom(N, PIXEL), 0.143)


def _write_map_folder(folder: Path, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    shells = fftfreq_grid((N, N, N), rfft=True, dtype=torch.float64).norm(dim=-1) * N

    def field(amplitude: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(N, N, N, generator=generator, dtype=torch.float64)
        return torch.fft.irfftn(torch.fft.rfftn(noise) * amplitude, s=(N, N, N))

    signal = field(_signal_power(shells).sqrt())
    half1 = signal + field(torch.ones_like(shells))
    half2 = signal + field(torch.ones_like(shells))
    folder.mkdir(parents=True)
    for name, volume in (("half1", half1), ("half2", half2), ("map", 0.5 * (half1 + half2))):
        write_mrc(volume.numpy().astype(np.float32), folder / f"{name}.mrc", voxel_size_angstrom=PIXEL)
    return folder


@pytest.fixture(scope="module")
def map_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_map_folder(tmp_path_factory.mktemp("postprocess") / "map")


def _volume(path: Path) -> np.ndarray:
    return np.array(read_mrc(path).data, dtype=np.float64)


def test_the_step_finds_the_designed_resolution_and_writes_relion_outputs(
    map_folder: Path, tmp_path: Path
) -> None:
    with Project.init(tmp_path / "project") as project:
        result = run_step(project, "averaging.postprocess", {}, {"map": map_folder})
        out = result.outputs["postprocess"].path
        record = json.loads((out / "postprocess.json").read_text())
        assert record["resolution_angstrom"] == pytest.approx(_designed_resolution(), rel=0.12)
        assert record["b_factor_fitted"] and record["b_factor_angstrom2"] < 0  # RELION's sign: sharpening
        shell = record["randomise_from_shell"]
        assert record["randomise_from_angstrom"] == pytest.approx(N * PIXEL / shell)
        assert "sphere of 76.8 Å" in record["mask"] and record["pixel_size_angstrom"] == PIXEL
        rows = (out / "fsc.csv").read_text().splitlines()
        assert rows[0] == (
            "shell,frequency_per_angstrom,resolution_angstrom,unmasked,masked,randomised,corrected"
        )
        assert len(rows) == N // 2 + 2
        table = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
        corrected, masked = table[:, 6], table[:, 4]
        assert np.array_equal(corrected[: shell + 2], masked[: shell + 2])  # RELION's two-shell guard
        power = _signal_power(torch.from_numpy(table[:, 0])).numpy()
        assert np.abs(corrected - power / (1 + power))[shell + 2 :].max() < 0.1
        sharpened, masked_map, mask = (
            _volume(out / f"{n}.mrc") for n in ("postprocess", "postprocess_masked", "mask")
        )
        assert read_mrc(out / "postprocess.mrc").voxel_size_angstrom[0] == pytest.approx(PIXEL)
        assert mask.max() == 1.0 and mask.min() == 0.0
        assert np.allclose(masked_map, sharpened * mask, atol=1e-5 * np.abs(sharpened).max())
        # Low-passed at the resolution: nothing is left two shells beyond it.
        radius = fftfreq_grid((N, N, N), rfft=True, dtype=torch.float64).norm(dim=-1).numpy() * N
        beyond = radius > N * PIXEL / record["resolution_angstrom"] + 1.5
        spectrum = np.abs(np.fft.rfftn(sharpened))
        assert spectrum[beyond].max() < 1e-4 * spectrum.max()
        for picture in ("fsc.svg", "guinier.svg"):
            assert (out / picture).read_text().startswith("<svg")
        assert "B = " in (out / "guinier.svg").read_text()
        # The mask written is a mask input that gives the same answer.
        again = run_step(project, "averaging.postprocess", {}, {"map": map_folder, "mask": out})
        other = json.loads((again.outputs["postprocess"].path / "postprocess.json").read_text())
        assert other["mask"].startswith("the file") and other["mask"].endswith("mask.mrc")
        assert other["resolution_angstrom"] == pytest.approx(record["resolution_angstrom"], rel=1e-3)
        # A mask from the average cut at a threshold (relion_mask_create) instead of the sphere.
        average = _volume(map_folder / "map.mrc")
        threshold = float(average.mean() + 2 * average.std())
        cut = run_step(project, "averaging.postprocess", {"mask_threshold": threshold}, {"map": map_folder})
        made = cut.outputs["postprocess"].path
        assert json.loads((made / "postprocess.json").read_text())["mask"].startswith(
            f"the average of the half maps at threshold {threshold:g}"
        )
        grown = _volume(made / "mask.mrc")
        assert grown.max() == 1.0 and grown.min() == 0.0
        assert (grown[average >= threshold] == 1.0).all()


def test_the_cli_with_a_given_b_factor(
    map_folder: Path, tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    project = Project.init(tmp_path / "project")
    project.close()  # the CLI opens the project itself
    code, out, err = cli(
        "run", "averaging.postprocess", "-p", str(project.root), "--input", f"map={map_folder}",
        "--b-factor-angstrom2", "-50", "--mask-diameter-angstrom", "70",
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (path,) = (project.root / "runs").glob("*/postprocess/postprocess.json")
    record = json.loads(path.read_text())
    assert record["b_factor_angstrom2"] == -50.0 and not record["b_factor_fitted"]
    assert "sphere of 70 Å" in record["mask"]


def test_bad_inputs_are_named(map_folder: Path, tmp_path: Path) -> None:
    project = Project.init(tmp_path / "project")
    other_shape = tmp_path / "other_shape"
    other_shape.mkdir()
    for name in ("half1", "map"):
        (other_shape / f"{name}.mrc").write_bytes((map_folder / f"{name}.mrc").read_bytes())
    write_mrc(np.zeros((N, N, N - 2), np.float32), other_shape / "half2.mrc", voxel_size_angstrom=PIXEL)
    with pytest.raises(StepFailedError, match=r"half2\.mrc.*shape"):
        run_step(project, "averaging.postprocess", {}, {"map": other_shape})
    other_voxel = tmp_path / "other_voxel"
    other_voxel.mkdir()
    (other_voxel / "half1.mrc").write_bytes((map_folder / "half1.mrc").read_bytes())
    write_mrc(
        _volume(map_folder / "half2.mrc").astype(np.float32),
        other_voxel / "half2.mrc",
        voxel_size_angstrom=3.0,
    )
    with pytest.raises(StepFailedError, match=r"half2\.mrc.*voxel size 3 Å"):
        run_step(project, "averaging.postprocess", {}, {"map": other_voxel})
    small_mask = tmp_path / "small_mask.mrc"
    write_mrc(np.ones((N // 2,) * 3, np.float32), small_mask, voxel_size_angstrom=PIXEL)
    with pytest.raises(StepFailedError, match=r"small_mask\.mrc.*mask's shape"):
        run_step(project, "averaging.postprocess", {}, {"map": map_folder, "mask": small_mask})
    bad_values = tmp_path / "bad_values.mrc"
    write_mrc(np.full((N,) * 3, 2.0, np.float32), bad_values, voxel_size_angstrom=PIXEL)
    with pytest.raises(StepFailedError, match=r"bad_values\.mrc.*between 0 and 1"):
        run_step(project, "averaging.postprocess", {}, {"map": map_folder, "mask": bad_values})
    with pytest.raises(StepFailedError, match="Guinier"):
        run_step(project, "averaging.postprocess", {"guinier_low_angstrom": 5.5}, {"map": map_folder})
    project.close()
