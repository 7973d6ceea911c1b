"""Whole simulated datasets (the ``tiny`` preset): raw data as from the microscope, a consistent truth, determinism."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch

from tomoforge.geometry import project_points, projection_matrices
from tomoforge.io.convert import read_alignment
from tomoforge.io.imod import read_imod_defocus, read_tlt
from tomoforge.io.mdoc import read_tilt_series_mdoc
from tomoforge.io.movies import open_movie
from tomoforge.io.mrc import read_mrc
from tomoforge.io.png import png_bytes
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.simulate.dataset import generate_dataset
from tomoforge.simulate.presets import PRESETS, SimulationConfig, preset_config
from tomoforge.simulate.preview import motion_corrected_sum, write_previews


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationConfig]:
    config = preset_config("tiny")
    out = tmp_path_factory.mktemp("tiny")
    summary = generate_dataset(config, out)
    assert summary.n_tilts == 9 and summary.frames_per_tilt == 4 and summary.ts_ids == ("TS_01",)
    assert summary.n_particles["TS_01"] > 20 and summary.n_gold["TS_01"] == 3
    return out, config


@pytest.fixture(scope="module")
def truth(tiny: tuple[Path, SimulationConfig]) -> dict:
    return json.loads((tiny[0] / "truth" / "truth.json").read_text())["tilt_series"]["TS_01"]


def test_frames_folder_is_what_the_microscope_writes(tiny):
    out, config = tiny
    series = read_tilt_series_mdoc(out / "frames" / "TS_01.mrc.mdoc", check_frames_exist=True)
    assert series.ts_id == "TS_01" and series.n_tilts == 9
    assert series.acquisition.tilt_axis_angle_deg == pytest.approx(85.3)  # the nominal axis, not the truth
    assert series.acquisition.pixel_size_angstrom == config.frame_pixel_size_angstrom
    assert series.tilt_angles_deg[0] == pytest.approx(-60.0, abs=0.01)
    assert series.tilt_angles_deg[-1] == pytest.approx(60.0, abs=0.01)
    order = sorted(series.tilts, key=lambda t: t.acquisition_order)
    assert [round(t.tilt_angle_deg) for t in order[:3]] == [0, 15, -15]  # dose-symmetric, from the real mdoc
    assert [t.prior_dose_e_per_angstrom2 for t in order[:3]] == [0.0, 3.0, 6.0]
    for tilt in series.tilts:
        assert tilt.frame_count == 4 and tilt.dose_e_per_angstrom2 == 3.0
        with open_movie(tilt.frames_file) as movie:
            assert movie.shape == (4, 192, 192) and movie.pixel_size_angstrom == 5.0
            assert movie.dtype.kind in "iu"
            frames = movie.read_frames()
        assert float(frames.min()) >= 0
        expected = 3.0 / 4 * 5.0**2  # e⁻ per pixel per frame
        assert float(np.median(frames.mean(axis=(1, 2)))) == pytest.approx(expected, rel=0.03)


def test_truth_files_agree_with_truth_json(tiny, truth):
    out, config = tiny
    root = out / "truth"
    tilts = truth["tilts"]
    alignment = read_alignment(
        root / "alignment" / "TS_01.xf", pixel_size_angstrom=10.0, image_size_xy=(96, 96)
    )
    sidecar = json.loads((root / "alignment" / "TS_01.json").read_text())
    assert sidecar == {"pixel_size_angstrom": 10.0, "image_size_xy": [96, 96], "excluded_views": []}
    for tilt, transform, angle in zip(tilts, alignment.transforms, alignment.tilt_angles_deg, strict=True):
        assert transform is not None
        assert transform.rotation_deg == pytest.approx(-truth["tilt_axis_angle_deg"], abs=1e-6)
        assert transform.dx_angstrom == pytest.approx(tilt["transform"]["dx_angstrom"], abs=1e-6)
        assert angle == pytest.approx(tilt["tilt_angle_deg"], abs=1e-9)
    assert truth["tilt_axis_angle_deg"] == pytest.approx(85.3 + config.tilt_axis_error_deg)
    assert np.allclose(
        read_tlt(root / "alignment" / "TS_01.rawtlt"), [t["nominal_tilt_angle_deg"] for t in tilts]
    )
    defocus = read_imod_defocus(root / "ctf" / "TS_01.defocus")
    for entry, tilt in zip(defocus.entries, tilts, strict=True):
        assert entry.ctf.defocus_u_angstrom == pytest.approx(tilt["defocus_u_angstrom"], abs=1e-6)
        assert entry.ctf.defocus_v_angstrom == pytest.approx(tilt["defocus_v_angstrom"], abs=1e-6)
    particles = read_relion_particles(root / "relion5" / "particles.star").particles
    assert np.allclose(
        particles.positions_angstrom(), truth["particles"]["positions_xyz_angstrom"], atol=1e-4
    )
    assert np.allclose(particles.rotation_matrices(), truth["particles"]["rotations"], atol=1e-5)
    gold = np.loadtxt(root / "gold" / "TS_01.csv", delimiter=",", skiprows=1)
    assert np.allclose(gold[:, :3], truth["gold"]["positions_xyz_angstrom"])
    motion = np.loadtxt(root / "motion" / "TS_01.csv", delimiter=",", skiprows=1)
    assert motion.shape == (36, 5) and np.all(motion[motion[:, 2] == 0, 3:] == 0.0)
    tomograms = starfile.read(root / "relion5" / "tomograms.star")
    assert float(tomograms["rlnTomoTiltSeriesPixelSize"][0]) == 10.0
    assert float(tomograms["rlnTomoTomogramBinning"][0]) == 2.0
    tomogram = read_mrc(root / "tomograms" / "TS_01.mrc")
    assert tomogram.voxel_size_angstrom[0] == pytest.approx(20.0)
    assert tuple(tomogram.data.shape) == tuple(truth["tomogram"]["shape_zyx"])
    reference = read_mrc(root / "average" / "map.mrc")
    assert reference.voxel_size_angstrom[0] == pytest.approx(10.0) and reference.data.shape == (26, 26, 26)
    assert float(np.asarray(reference.data).max()) > 1.0  # protein denser than ice: positive contrast (V)
    xrays = (root / "xrays" / "TS_01.csv").read_text().splitlines()
    assert xrays[0].startswith("acquisition_order,tilt_angle_deg,frame,x_px,y_px")


def test_truth_geometry_lands_on_the_gold_beads_of_the_movies(tiny, truth):
    """Project the true bead positions with the true geometry: each lands on a dark bead in the corrected frames."""
    out, config = tiny
    pmc, pf = config.motion_corrected_pixel_size_angstrom, config.frame_pixel_size_angstrom
    gold = torch.tensor(truth["gold"]["positions_xyz_angstrom"], dtype=torch.float64) / pmc
    for tilt in truth["tilts"]:
        with open_movie(out / tilt["frames_file"]) as movie:
            frames = torch.from_numpy(movie.read_frames())
        motion = torch.tensor(tilt["motion_xy_angstrom"], dtype=torch.float64) / pf
        image = motion_corrected_sum(frames, motion, binning=2).to(torch.float64)
        shift = torch.tensor(tilt["shift_xy_angstrom"], dtype=torch.float64) / pmc
        matrix = projection_matrices(
            tilt["tilt_angle_deg"], truth["tilt_axis_angle_deg"], shift, truth["x_tilt_deg"]
        )
        projected = project_points(gold, matrix)
        ys, xs = torch.meshgrid(torch.arange(96.0) - 48, torch.arange(96.0) - 48, indexing="ij")
        for x, y, _ in projected.tolist():
            if max(abs(x), abs(y)) > 40:
                continue
            near = (xs - x) ** 2 + (ys - y) ** 2 < 36
            darkness = (image.median() - image).clamp(min=0) * near
            centre = torch.stack([(darkness * xs).sum(), (darkness * ys).sum()]) / darkness.sum()
            assert float(torch.linalg.vector_norm(centre - torch.tensor([x, y]))) < 1.0, (
                tilt["tilt_angle_deg"],
                x,
                y,
            )
            core = (xs - x) ** 2 + (ys - y) ** 2 < 6
            assert float(image[core].mean()) < 0.8 * float(image.median())


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tiny, tmp_path):
    out, config = tiny
    generate_dataset(config, tmp_path / "again")
    for path in sorted(out.rglob("*")):
        if path.is_file() and "preview" not in path.parts:
            assert path.read_bytes() == (tmp_path / "again" / path.relative_to(out)).read_bytes(), path
    generate_dataset(config.model_copy(update={"seed": 1, "tilt_stride": 20}), tmp_path / "other")
    movie = "frames/TS_01_000_0.0.mrc"
    assert (out / movie).read_bytes() != (tmp_path / "other" / movie).read_bytes()


def test_tutorial_preset_streams_frames_with_a_downscaled_override(tmp_path):
    config = preset_config(
        "tutorial-small",
        frame_size_xy_px=(256, 240),
        n_viruses=0,
        n_gold=1,
        tilt_stride=20,
        frames_per_tilt=2,
        ice_thickness_angstrom=400.0,
        stage_shift_sd_angstrom=20.0,
    )
    summary = generate_dataset(config, tmp_path)
    assert summary.n_tilts == 3 and summary.frame_pixel_size_angstrom == 0.675
    with open_movie(tmp_path / "frames" / "TS_01_000_0.0.mrc") as movie:
        assert movie.shape == (2, 240, 256)
        mean = float(movie.read_frames().mean())
    assert mean == pytest.approx(3.0 / 2 * 0.675**2, rel=0.05)
    sidecar = json.loads((tmp_path / "truth" / "alignment" / "TS_01.json").read_text())
    assert sidecar["image_size_xy"] == [128, 120] and sidecar["pixel_size_angstrom"] == 1.35


def test_presets_and_config_validation():
    assert PRESETS["tutorial-small"].frame_size_xy_px == (7420, 7676)
    assert PRESETS["tutorial-large"].n_tilt_series == 5
    assert PRESETS["tutorial-large"].tilt_series_ids == ("TS_01", "TS_03", "TS_43", "TS_45", "TS_54")
    demo = PRESETS["demo"]
    assert (demo.frame_pixel_size_angstrom, demo.motion_corrected_pixel_size_angstrom) == (2.7, 5.4)
    assert demo.upsampling == 2 and demo.tomogram_binning == 2
    with pytest.raises(ValueError, match="integer multiple"):
        preset_config("tiny", simulation_voxel_size_angstrom=7.0)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="frame sizes"):
        preset_config("tiny", frame_size_xy_px=(190, 192))
    with pytest.raises(ValueError):
        preset_config("tiny", n_tilt_series=6)


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 0) and b"IEND" in chunks
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, width + 1)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:]


def test_png_writer_and_previews(tiny):
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(_decode_png(png_bytes(image, origin="upper")), image)
    assert np.array_equal(_decode_png(png_bytes(image)), image[::-1])  # row 0 at the bottom, as IMOD shows it
    with pytest.raises(ValueError):
        png_bytes(image.astype(np.float32))
    written = write_previews(tiny[0])
    names = {p.name for p in written}
    assert {
        "frame.png",
        "tilt_000deg_aligned.png",
        "tilt_060deg_aligned.png",
        "tilt_000deg_power_spectrum.png",
    } <= names
    assert {"tomogram_xy_central.png", "tomogram_xy_gold.png", "tomogram_xz_central.png"} <= names
    frame = _decode_png((tiny[0] / "truth" / "preview" / "frame.png").read_bytes())
    assert frame.shape == (192, 192) and frame.std() > 10
