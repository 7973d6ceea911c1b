"""The preprocessing steps (import, motion correction, dose filter, binning) on the simulator's tiny preset."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.io.mrc import read_mrc
from tomoforge.steps._artifacts import (
    read_dose_filter_record,
    read_motion_table,
    read_tilt_series,
    read_tilt_series_movies,
)
from tomoforge.steps.preprocess import binned_window
from tomoforge.workflow import (
    Node,
    Project,
    Ref,
    RunOutput,
    RunResult,
    StepFailedError,
    get_registry,
    run_pipeline,
    run_step,
)

STEPS = ("import.movies", "motion.correct", "dose.filter", "preprocess.bin")


def chain(frames: Path, *, binning: int = 3) -> dict[str, Node]:
    return {
        "import": Node("import.movies", {}, {"movies": frames}),
        "motion": Node("motion.correct", {"even_odd": True}, {"movies": Ref("import", "movies")}),
        "dose": Node("dose.filter", {}, {"tilt_series": Ref("motion", "tilt_series")}),
        "bin": Node("preprocess.bin", {"binning": binning}, {"tilt_series": Ref("dose", "tilt_series")}),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tomoforge.simulate import generate_dataset, preset_config

    # As tests/motion: the default tiny motion (2 Å) is too small to measure on 192² frames; 12 Å jump + drift.
    config = preset_config(
        "tiny", initial_jump_angstrom=12.0, drift_angstrom_per_frame=2.0, jitter_angstrom=0.5
    )
    out = tmp_path_factory.mktemp("tiny_steps")
    generate_dataset(config, out)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project.init(tmp_path_factory.mktemp("steps_project") / "project")


@pytest.fixture(scope="module")
def results(project: Project, dataset: Path) -> dict[str, RunResult]:
    return run_pipeline(project, chain(dataset / "frames"))


def test_steps_are_registered_with_hooks() -> None:
    registry = get_registry()
    for name in STEPS:
        spec = registry.get(name)
        assert spec.summary is not None and spec.methods is not None
        assert "doi:" in spec.methods(spec.params_model())
        for field in spec.params_model.model_fields.values():
            assert field.description


def test_import_keeps_acquisition_order_and_doses(results: dict[str, RunResult]) -> None:
    (movies,) = read_tilt_series_movies(results["import"].outputs["movies"].path)
    assert movies.ts_id == "TS_01" and movies.n_tilts == 9
    assert movies.tilt_angles_deg == sorted(movies.tilt_angles_deg)
    by_time = sorted(movies.tilts, key=lambda t: t.acquisition_order)
    assert [t.prior_dose_e_per_angstrom2 for t in by_time] == pytest.approx([3.0 * i for i in range(9)])
    assert all(t.frames_file.is_file() for t in movies.tilts)


def test_motion_shifts_match_the_truth(results: dict[str, RunResult], dataset: Path) -> None:
    from tomoforge.simulate.scoring.motion import read_motion_csv

    folder = results["motion"].outputs["tilt_series"].path
    estimate = read_motion_table(folder / "TS_01_motion.csv")
    truth = read_motion_csv(dataset / "truth" / "motion" / "TS_01.csv")
    assert sorted(estimate) == sorted(truth) and len(truth) == 9
    frame_pixel = 5.0  # super-resolution pixel of the tiny preset, Å
    errors, spreads = [], []
    for order, track in truth.items():
        frames, shifts = estimate[order]
        np.testing.assert_array_equal(frames, track.frames)
        error = (shifts - track.shifts_xy_angstrom) / frame_pixel
        errors.append(error - error.mean(axis=0))
        spreads.append(
            track.shifts_xy_angstrom / frame_pixel - track.shifts_xy_angstrom.mean(axis=0) / frame_pixel
        )
    rms = float(np.sqrt(np.mean(np.sum(np.concatenate(errors) ** 2, axis=1))))
    nothing = float(np.sqrt(np.mean(np.sum(np.concatenate(spreads) ** 2, axis=1))))
    assert rms < 0.15, f"RMS error {rms:.3f} super-resolution px"
    assert rms < 0.2 * nothing


def test_motion_stack_geometry(results: dict[str, RunResult]) -> None:
    (series,) = read_tilt_series(results["motion"].outputs["tilt_series"].path)
    assert series.pixel_size_angstrom == pytest.approx(10.0) and series.image_shape_yx == (96, 96)
    assert series.tilt_angles_deg == sorted(series.tilt_angles_deg)
    assert sorted(t.acquisition_order for t in series.tilts) == list(range(9))
    for path in (series.stack_file, series.even_stack_file, series.odd_stack_file):
        assert path is not None
        volume = read_mrc(path)
        assert volume.data.shape == (9, 96, 96)
        assert volume.voxel_size_angstrom[0] == pytest.approx(10.0)
    full = np.asarray(read_mrc(series.stack_file).data, dtype=np.float64)
    halves = np.asarray(read_mrc(series.even_stack_file).data) + np.asarray(
        read_mrc(series.odd_stack_file).data
    )
    np.testing.assert_allclose(halves, full, rtol=0, atol=1e-3 * np.abs(full).max())
    # 4 frames of about 19 counts per super-resolution pixel: the sum keeps the counts per pixel.
    assert 40 < full.mean() < 120


def closed_form_filter(image: np.ndarray, pixel: float, prior: float, dose: float) -> np.ndarray:
    """Grant & Grigorieff (2015) at 300 kV, averaged over [prior, prior + dose], written out in numpy."""
    ky = np.fft.fftfreq(image.shape[0], d=pixel)[:, None]
    kx = np.fft.rfftfreq(image.shape[1], d=pixel)[None, :]
    k = np.sqrt(ky**2 + kx**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        critical = 0.245 * k**-1.665 + 2.81
        weight = (
            2 * critical / dose * (np.exp(-prior / (2 * critical)) - np.exp(-(prior + dose) / (2 * critical)))
        )
    weight[0, 0] = 1.0
    return np.fft.irfft2(np.fft.rfft2(image) * weight, s=image.shape)


def test_dose_filter_equals_the_closed_form(results: dict[str, RunResult]) -> None:
    (before,) = read_tilt_series(results["motion"].outputs["tilt_series"].path)
    folder = results["dose"].outputs["tilt_series"].path
    (after,) = read_tilt_series(folder)
    record = read_dose_filter_record(folder, "TS_01")
    assert record is not None and record.dose_filtered
    assert record.prior_dose_e_per_angstrom2 == [t.prior_dose_e_per_angstrom2 for t in before.tilts]
    assert all(t.prior_dose_e_per_angstrom2 == 0.0 for t in after.tilts)
    assert [t.dose_e_per_angstrom2 for t in after.tilts] == [t.dose_e_per_angstrom2 for t in before.tilts]
    raw = np.asarray(read_mrc(before.stack_file).data, dtype=np.float64)
    filtered = np.asarray(read_mrc(after.stack_file).data, dtype=np.float64)
    for i, tilt in enumerate(before.tilts):
        expected = closed_form_filter(
            raw[i], 10.0, tilt.prior_dose_e_per_angstrom2, tilt.dose_e_per_angstrom2
        )
        assert np.abs(filtered[i] - expected).max() < 1e-5 * np.abs(expected).max()
    assert (folder / "TS_01_motion.csv").is_file() and after.even_stack_file is not None


def test_binning_keeps_pixel_size_and_centre(results: dict[str, RunResult]) -> None:
    from tomoforge.fourier import fourier_bin_2d

    (source,) = read_tilt_series(results["dose"].outputs["tilt_series"].path)
    folder = results["bin"].outputs["tilt_series"].path
    (binned,) = read_tilt_series(folder)
    assert binned.pixel_size_angstrom == pytest.approx(30.0) and binned.image_shape_yx == (32, 32)
    data = np.asarray(read_mrc(binned.stack_file).data, dtype=np.float64)
    assert data.shape == (9, 32, 32) and read_mrc(binned.stack_file).voxel_size_angstrom[0] == pytest.approx(
        30.0
    )
    np.testing.assert_allclose(data.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.std(axis=(1, 2)), 1.0, atol=1e-4)
    raw = torch.from_numpy(np.asarray(read_mrc(source.stack_file).data, dtype=np.float64)[4])
    expected = fourier_bin_2d(raw, 3)
    expected = (expected - expected.mean()) / expected.std(correction=0)
    np.testing.assert_allclose(data[4], expected.numpy(), atol=1e-4)
    assert [t.prior_dose_e_per_angstrom2 for t in binned.tilts] == [0.0] * 9
    assert read_dose_filter_record(folder, "TS_01") is not None


@pytest.mark.parametrize("binning", [3, 5])
def test_antialiased_binning_keeps_the_geometry_of_fourier_binning(
    project: Project, results: dict[str, RunResult], binning: int
) -> None:
    dose = RunOutput(results["dose"].run.id, "tilt_series")
    runs = {
        method: run_step(
            project, "preprocess.bin", {"binning": binning, "method": method}, {"tilt_series": dose}
        )
        for method in ("fourier", "antialias")
    }
    (fourier,), (antialias,) = (read_tilt_series(runs[m].outputs["tilt_series"].path) for m in runs)
    # 96 px: binning 3 → 32 px; binning 5 → the centred window of 90 px → 18 px, centre 48 on binned pixel 9.
    shape = (32, 32) if binning == 3 else (18, 18)
    for series in (fourier, antialias):
        assert series.pixel_size_angstrom == pytest.approx(10.0 * binning) and series.image_shape_yx == shape
        volume = read_mrc(series.stack_file)
        assert volume.data.shape == (9, *shape) and volume.voxel_size_angstrom[0] == pytest.approx(
            10.0 * binning
        )
    assert antialias.tilts == fourier.tilts and antialias.acquisition == fourier.acquisition
    a = np.asarray(read_mrc(antialias.stack_file).data, dtype=np.float64)
    f = np.asarray(read_mrc(fourier.stack_file).data, dtype=np.float64)
    np.testing.assert_allclose(a.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(a.std(axis=(1, 2)), 1.0, atol=1e-4)

    # The two filters differ by design between 0.6 and 1 times the new Nyquist (Lanczos transition band), where
    # these noisy images keep 30-60 % of their power, and at the edges (periodic window vs mirrored image): the raw
    # images correlate 0.86-0.97. Below half the new Nyquist both pass the signal within 1.4 %, so there, away
    # from the edges (3 binned px, the Lanczos radius), the images must agree (measured 0.994-0.9995).
    def below_half_nyquist(images: np.ndarray) -> np.ndarray:
        k = np.hypot(*np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.rfftfreq(shape[1]), indexing="ij"))
        return np.fft.irfft2(np.fft.rfft2(images) * (k < 0.25), s=shape)[:, 3:-3, 3:-3]

    def correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = x - x.mean(axis=(1, 2), keepdims=True)
        y = y - y.mean(axis=(1, 2), keepdims=True)
        return (x * y).sum(axis=(1, 2)) / np.sqrt((x**2).sum(axis=(1, 2)) * (y**2).sum(axis=(1, 2)))

    raw = correlation(a, f)
    band = correlation(below_half_nyquist(a), below_half_nyquist(f))
    assert band.min() > 0.99, band
    assert raw.min() > 0.8 and raw.max() < 0.999, raw  # alike, yet not the same filter
    spec = get_registry().get("preprocess.bin")
    assert spec.methods is not None
    assert "Lanczos" in spec.methods(spec.params_model(binning=binning, method="antialias"))
    assert "Fourier cropping" in spec.methods(spec.params_model(binning=binning))


@pytest.mark.parametrize(("n", "factor"), [(96, 3), (97, 2), (100, 6), (7, 2), (10, 3)])
def test_binned_window_keeps_the_centre_pixel(n: int, factor: int) -> None:
    start, m = binned_window(n, factor)
    assert start >= 0 and start + factor * m <= n and m >= n // factor - 1
    assert start + factor * (m // 2) == n // 2


def test_rerun_is_cached_and_summaries_report_numbers(
    project: Project, dataset: Path, results: dict[str, RunResult]
) -> None:
    again = run_pipeline(project, chain(dataset / "frames"))
    assert all(r.cached for r in again.values())
    assert all(again[k].run.id == results[k].run.id for k in results)
    summary = get_registry().get("motion.correct").summary
    assert summary is not None
    numbers = summary(results["motion"].outputs)["TS_01"]
    assert isinstance(numbers, dict) and len(numbers["max_shift_angstrom"]) == 9
    assert 5.0 < numbers["largest_shift_angstrom"] < 40.0


def test_missing_movie_is_named(dataset: Path, tmp_path: Path) -> None:

    frames = tmp_path / "frames"
    shutil.copytree(dataset / "frames", frames)
    (frames / "TS_01_003_-30.0.mrc").unlink()
    project = Project.init(tmp_path / "p")
    with pytest.raises(StepFailedError, match=r"TS_01_003_-30\.0\.mrc"):
        run_step(project, "import.movies", {}, {"movies": frames})
    imported = run_step(project, "import.movies", {"check_frames_exist": False}, {"movies": frames})
    with pytest.raises(StepFailedError, match=r"TS_01_003_-30\.0\.mrc"):
        run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})


def test_corrupt_movie_is_named(dataset: Path, tmp_path: Path) -> None:

    frames = tmp_path / "frames"
    shutil.copytree(dataset / "frames", frames)
    movie = frames / "TS_01_005_45.0.mrc"
    movie.write_bytes(movie.read_bytes()[:5000])
    project = Project.init(tmp_path / "p")
    imported = run_step(project, "import.movies", {}, {"movies": frames})
    with pytest.raises(StepFailedError, match=r"TS_01_005_45\.0\.mrc") as info:
        run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    assert str(info.value).count("\n") == 0


def test_cli_lists_and_runs_the_steps(
    dataset: Path, tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    def run_cli(*args: str) -> tuple[int, str]:
        code, out, err = cli(*args)
        return code, out + err

    code, out = run_cli("steps")
    assert code == 0 and all(name in out for name in STEPS)
    root = str(tmp_path / "p")
    assert run_cli("project", "init", root)[0] == 0
    code, out = run_cli("run", "import.movies", "-p", root, "--input", f"movies={dataset / 'frames'}")
    assert code == 0, out
    code, out = run_cli("run", "motion.correct", "-p", root, "--input", "movies=2:movies", "--binning", "2")
    assert code == 0, out


def test_gain_of_the_wrong_size_is_named(
    project: Project, results: dict[str, RunResult], tmp_path: Path
) -> None:
    from tomoforge.io.mrc import write_mrc

    gain = write_mrc(np.ones((10, 12), dtype=np.float32), tmp_path / "gain.mrc", voxel_size_angstrom=5.0)
    movies = RunOutput(results["import"].run.id, "movies")
    with pytest.raises(StepFailedError, match=r"gain\.mrc.*does not match"):
        run_step(project, "motion.correct", {"gain_rotation_deg": 90}, {"movies": movies, "gain": gain})


def test_dose_weighted_sum_keeps_the_mean_and_damps_high_frequencies(
    results: dict[str, RunResult], project: Project
) -> None:
    movies = RunOutput(results["import"].run.id, "movies")
    weighted = run_step(project, "motion.correct", {"dose_weighting": True}, {"movies": movies})
    (plain_series,) = read_tilt_series(results["motion"].outputs["tilt_series"].path)
    (weighted_series,) = read_tilt_series(weighted.outputs["tilt_series"].path)
    plain = torch.from_numpy(np.asarray(read_mrc(plain_series.stack_file).data, dtype=np.float64))
    damped = torch.from_numpy(np.asarray(read_mrc(weighted_series.stack_file).data, dtype=np.float64))
    # the DC weight is 1, so every image keeps its mean …
    torch.testing.assert_close(damped.mean(dim=(-2, -1)), plain.mean(dim=(-2, -1)), rtol=1e-4, atol=0)
    # … and, the frame weights being normalised to keep the noise power (Σ w·F·√(n/Σw²)), the high-frequency power
    # of the counting noise stays within 2 %, while the sums do change (later frames are down-weighted).
    power = lambda x: torch.fft.rfft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs().square()  # noqa: E731
    ratio = power(damped)[..., 30:, 30:].mean(dim=(-2, -1)) / power(plain)[..., 30:, 30:].mean(dim=(-2, -1))
    assert torch.all((ratio - 1.0).abs() < 0.02)
    assert float((damped - plain).abs().max()) > 1e-3 * float(plain.abs().max())
