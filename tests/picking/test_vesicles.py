"""Vesicle finding on a phantom tomogram: dense shells seen through the missing wedge, in noise."""

from __future__ import annotations

import pytest
import torch

from tomoforge.picking import ellipsoid_closest_point, find_vesicles
from vesicle_phantom import VESICLES, VOXEL, vesicle_phantom


def test_finds_each_vesicle_and_fits_its_surface() -> None:
    found = find_vesicles(vesicle_phantom(0, VESICLES), VOXEL, radius_range_angstrom=(200.0, 400.0))
    assert len(found) == len(VESICLES)
    for (centre, radii), vesicle in zip(
        VESICLES, sorted(found, key=lambda v: float(v.fit.centre_xyz[0])), strict=True
    ):
        error = float(
            torch.linalg.vector_norm(vesicle.fit.centre_xyz - torch.tensor(centre, dtype=torch.float64))
        )
        assert error < 8.0, error
        # The layer is traced where the tomogram shows it (|elevation| ≤ 50°): the points lie within a voxel of the
        # true surface.
        true_radii = torch.tensor(radii, dtype=torch.float64)
        points = vesicle.points_xyz_angstrom - torch.tensor(centre, dtype=torch.float64)
        _, to_truth = ellipsoid_closest_point(points, true_radii)
        assert float(to_truth.abs().median()) < 10.0
        fitted = sorted(vesicle.fit.radii.tolist())
        assert fitted == pytest.approx(sorted(radii), rel=0.04), fitted


def test_noise_alone_has_no_vesicles() -> None:
    assert find_vesicles(vesicle_phantom(1, []), VOXEL, radius_range_angstrom=(200.0, 400.0)) == []


def test_bad_radius_range_is_refused() -> None:
    with pytest.raises(ValueError, match="radius range"):
        find_vesicles(torch.zeros(72, 128, 128), VOXEL, radius_range_angstrom=(300.0, 100.0))
