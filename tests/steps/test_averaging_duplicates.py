"""``averaging.remove_duplicates``: RELION's rule on hand-made points, then through the engine and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import starfile

from tomoforge.io.mrc import write_mrc
from tomoforge.models import Particle, ParticleSet, Tomogram, save_json
from tomoforge.steps._particles import read_particles_artifact, write_particles_artifact
from tomoforge.steps._tomograms import write_tomogram_model
from tomoforge.steps.averaging_duplicates import duplicate_mask
from tomoforge.workflow import Project, StepFailedError, get_registry, run_step

VOXEL = 10.0
SHAPE = (16, 40, 40)


def _relion_loop(positions: np.ndarray, dist: float) -> np.ndarray:
    """RELION's ``removeDuplicatedParticles`` loop for one micrograph, written out as it is there."""
    valid = [True] * len(positions)
    for i in range(len(positions)):
        for j in range(i + 1, len(positions)):
            if float(((positions[i] - positions[j]) ** 2).sum()) <= dist * dist:
                valid[i] = False
                break
    return ~np.array(valid, dtype=bool)


def _line(*xs: float) -> np.ndarray:
    return np.array([[x, 0.0, 0.0] for x in xs])


def test_a_particle_goes_when_a_later_one_is_close() -> None:
    # 0–20: 20, 20–45: 25, 45–70: 25 (all ≤ 30); 70 has nothing close after it, 200 is alone.
    assert duplicate_mask(_line(0, 20, 45, 70, 200), 30.0).tolist() == [True, True, True, False, False]
    # The later one of a pair is kept, whichever way round the list has them.
    assert duplicate_mask(_line(0, 10), 30.0).tolist() == [True, False]
    assert duplicate_mask(_line(10, 0), 30.0).tolist() == [True, False]


def test_chains_and_the_exact_distance() -> None:
    # A removed particle still removes the ones before it: 0 is within 30 of 25 only, and 25 goes because of 50.
    assert duplicate_mask(_line(0, 25, 50), 30.0).tolist() == [True, True, False]
    # A later particle that is not close does not save an earlier one from a close one after it.
    assert duplicate_mask(_line(0, 500, 29), 30.0).tolist() == [True, False, False]
    # Exactly the distance counts as a duplicate (≤), just over does not; in 3-D as along a line.
    assert duplicate_mask(_line(0, 30), 30.0).tolist() == [True, False]
    assert duplicate_mask(_line(0, 30.001), 30.0).tolist() == [False, False]
    assert duplicate_mask(np.array([[0.0, 0.0, 0.0], [18.0, 24.0, 0.0]]), 30.0).tolist() == [True, False]
    assert duplicate_mask(np.array([[0.0, 0.0, 0.0], [18.0, 24.0, 0.1]]), 30.0).tolist() == [False, False]
    # Many copies of one point: only the last is kept.
    assert duplicate_mask(np.zeros((5, 3)), 1.0).tolist() == [True, True, True, True, False]
    assert duplicate_mask(np.zeros((0, 3)), 30.0).shape == (0,)
    assert duplicate_mask(np.zeros((1, 3)), 30.0).tolist() == [False]
    with pytest.raises(ValueError, match="shape"):
        duplicate_mask(np.zeros((4, 2)), 30.0)


@pytest.mark.parametrize("seed", range(6))
def test_the_grid_search_matches_relion_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, dist = 400, float(rng.uniform(5, 60))
    positions = rng.uniform(-250, 250, (n, 3))
    if seed % 2:
        positions = np.round(positions / 10) * 10  # a lattice: many pairs exactly `dist` apart
        dist = 10.0 * (1 + seed % 3)
    positions[: n // 8] = positions[0]  # and a clump of copies of one point
    expected = _relion_loop(positions, dist)
    assert 0 < expected.sum() < n
    np.testing.assert_array_equal(duplicate_mask(positions, dist), expected)
    # The same points far from the origin and spread thinly: the answer does not move.
    np.testing.assert_array_equal(duplicate_mask(positions + 1e5, dist), expected)


def test_too_fine_a_grid_falls_back_to_all_pairs() -> None:
    positions = np.array([[0.0, 0.0, 0.0], [1e9, 0.0, 0.0], [1e9, 1e-6, 0.0], [1e9, 0.0, 2e-5]])
    assert duplicate_mask(positions, 1e-5).tolist() == [False, True, False, False]


# Eight particles in two tomograms, the tomograms interleaved in the list; TS_01's 0 has TS_02's 1 on top of it.
# Removed: 0 (TS_01, 25 Å from the later 2) and 3 (TS_02, exactly 30 Å from the later 5); 1 is 31 Å from 7.
POSITIONS = [
    ("TS_01", (0.0, 0.0, 0.0)),
    ("TS_02", (0.0, 0.0, 0.0)),
    ("TS_01", (25.0, 0.0, 0.0)),
    ("TS_02", (100.0, 0.0, 0.0)),
    ("TS_01", (100.0, 50.0, 0.0)),
    ("TS_02", (100.0, 0.0, 30.0)),
    ("TS_01", (-100.0, -50.0, 0.0)),
    ("TS_02", (0.0, 0.0, 31.0)),
]
REMOVED = {"TS_01": [0], "TS_02": [3]}
KEPT = [1, 2, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def tomograms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small tomograms as a ``tomograms`` artifact (MRC + Tomogram model each)."""
    folder = tmp_path_factory.mktemp("duplicates") / "tomograms"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for ts_id in ("TS_01", "TS_02"):
        write_mrc(
            rng.normal(size=SHAPE).astype(np.float32), folder / f"{ts_id}.mrc", voxel_size_angstrom=VOXEL
        )
        tomogram = Tomogram(
            ts_id=ts_id,
            volume_file=folder / f"{ts_id}.mrc",
            voxel_size_angstrom=VOXEL,
            shape_zyx=SHAPE,
            reconstruction_method="wbp",
            binning=1.0,
        )
        write_tomogram_model(folder, tomogram)
    return folder


def _particles(
    folder: Path, tomograms: Path, positions: list[tuple[str, tuple[float, float, float]]]
) -> Path:
    from tomoforge.steps._tomograms import read_tomograms

    folder.mkdir()
    particle_set = ParticleSet(
        particles=[
            Particle(ts_id=ts_id, position_angstrom=xyz, group=f"{ts_id}/{1 + k // 4}", score=float(k))
            for k, (ts_id, xyz) in enumerate(positions)
        ],
        pixel_size_angstrom=VOXEL,
        box_size_px=24,
        symmetry="C6",
    )
    write_particles_artifact(
        folder, particle_set, read_tomograms(tomograms), picture_half_depth_angstrom=50.0
    )
    return folder


def _check_output(out: Path) -> None:
    kept = read_particles_artifact(out)
    assert [p.score for p in kept.particles] == [float(k) for k in KEPT]
    assert [(p.ts_id, p.position_angstrom) for p in kept.particles] == [POSITIONS[k] for k in KEPT]
    assert (kept.pixel_size_angstrom, kept.box_size_px, kept.symmetry) == (VOXEL, 24, "C6")
    star = starfile.read(out / "particles.star")["particles"]
    assert star["rlnTomoName"].tolist() == [POSITIONS[k][0] for k in KEPT]
    centred = star[
        ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
    ]
    np.testing.assert_allclose(centred.to_numpy(), [POSITIONS[k][1] for k in KEPT])
    record = json.loads((out / "removed.json").read_text())
    assert record["min_distance_angstrom"] == 30.0
    assert {ts: entry["removed_indices"] for ts, entry in record["tomograms"].items()} == REMOVED
    assert {ts: (entry["kept"], entry["removed"]) for ts, entry in record["tomograms"].items()} == {
        "TS_01": (3, 1),
        "TS_02": (3, 1),
    }
    gone = starfile.read(out / "particles_removed.star")["particles"]
    assert gone["rlnTomoName"].tolist() == ["TS_01", "TS_02"]
    np.testing.assert_allclose(gone["rlnCenteredCoordinateXAngst"].to_numpy(), [0.0, 100.0])
    # Group labels are not integers: the removed ones carry the numbers of the whole input set.
    numbers = record["removed_star_group_numbers"]
    assert numbers == {"TS_01/1": "1", "TS_01/2": "2", "TS_02/1": "3", "TS_02/2": "4"}
    assert gone["rlnGroupNumber"].tolist() == [1, 3]
    assert numbers == json.loads((out / "particle_groups.json").read_text())
    assert (out / "TS_01_picks.png").is_file() and (out / "tomograms.doc").is_file()


def test_through_the_engine(tomograms: Path, tmp_path: Path) -> None:
    particles = _particles(tmp_path / "particles", tomograms, POSITIONS)
    project = Project.init(tmp_path / "project")
    result = run_step(
        project,
        "averaging.remove_duplicates",
        {"min_distance_angstrom": 30},
        {"particles": particles, "tomograms": tomograms},
    )
    out = result.outputs["particles"].path
    _check_output(out)
    assert project.store.summary(result.run.id) == {
        "TS_01": {"kept": 3, "removed": 1},
        "TS_02": {"kept": 3, "removed": 1},
    }
    spec = get_registry().get("averaging.remove_duplicates")
    assert spec.methods is not None
    methods = spec.methods(spec.params_model(min_distance_angstrom=30))
    assert "--remove_duplicates 30" in methods and "Scheres 2012" in methods
    # At 31 Å, TS_02's 1 goes too (31 Å from the later 7); TS_01's 2 stays (90 Å from 4).
    again = run_step(
        project,
        "averaging.remove_duplicates",
        {"min_distance_angstrom": 31},
        {"particles": particles, "tomograms": tomograms},
    )
    record = json.loads((again.outputs["particles"].path / "removed.json").read_text())
    assert {ts: entry["removed_indices"] for ts, entry in record["tomograms"].items()} == {
        "TS_01": [0],
        "TS_02": [1, 3],
    }


def test_nothing_removed_writes_no_removed_star(tomograms: Path, tmp_path: Path) -> None:
    particles = _particles(tmp_path / "particles", tomograms, POSITIONS)
    project = Project.init(tmp_path / "project")
    result = run_step(
        project,
        "averaging.remove_duplicates",
        {"min_distance_angstrom": 5},
        {"particles": particles, "tomograms": tomograms},
    )
    out = result.outputs["particles"].path
    assert len(read_particles_artifact(out).particles) == len(POSITIONS)
    assert not (out / "particles_removed.star").exists()


def test_through_the_cli(tomograms: Path, tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    particles = _particles(tmp_path / "particles", tomograms, POSITIONS)
    project = Project.init(tmp_path / "project")
    project.close()  # the CLI opens the project itself
    code, out, err = cli(
        "run", "averaging.remove_duplicates", "-p", str(project.root),
        "--input", f"particles={particles}", "--input", f"tomograms={tomograms}",
        "--min-distance-angstrom", "30",
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (made,) = (project.root / "runs").glob("*/particles/removed.json")
    _check_output(made.parent)


def test_a_particle_outside_the_tomograms_is_named(tomograms: Path, tmp_path: Path) -> None:
    particles = _particles(tmp_path / "particles", tomograms, POSITIONS)
    # The exports need every tomogram, so the stray particle goes into particles.json only.
    particle_set = read_particles_artifact(particles)
    stray = Particle(ts_id="TS_99", position_angstrom=(0.0, 0.0, 0.0))
    save_json(
        particle_set.model_copy(update={"particles": [*particle_set.particles, stray]}),
        particles / "particles.json",
    )
    project = Project.init(tmp_path / "project")
    with pytest.raises(StepFailedError, match="TS_99"):
        run_step(
            project,
            "averaging.remove_duplicates",
            {"min_distance_angstrom": 30},
            {"particles": particles, "tomograms": tomograms},
        )
