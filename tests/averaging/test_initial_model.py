"""The de novo initial model kernel on synthetic subtomograms of a handed C6 object seen through a missing wedge:
a known pose and shift are found, the symmetry axis of a tilted map goes to z, and stochastic EM from a random start
recovers the object, the right hand and consistent poses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from subtomogram_phantom import BOX, phantom, random_rotations, subtomogram
from tomoforge.averaging import symmetry_rotations
from tomoforge.averaging.initial_model import (
    Subtomograms,
    candidate_rotations,
    de_novo_model,
    local_frame,
    noise_power,
    offsets_within,
    posterior,
    symmetry_axis_rotation,
)
from tomoforge.geometry import rotate_volume, rotation_x, rotation_y, rotation_z


def test_a_known_pose_and_shift_are_the_most_probable() -> None:
    generator = torch.Generator().manual_seed(0)
    volume = phantom()
    rotations, tilts = candidate_rotations(15.0, max_tilt_deg=30.0)
    true = len(rotations) - 3
    assert 0 < tilts[true] <= 30.0
    data, weights = subtomogram(volume, rotations[true].float(), (1, -2, 0), 0.05, generator)
    batch = local_frame(data[None], weights[None], torch.eye(3)[None])
    total, count = noise_power(batch)
    sigma2 = total / count.clamp(min=1)
    offsets = offsets_within(3.0)
    post = posterior(volume, batch, rotations, torch.zeros(len(rotations)), offsets, sigma2, 0.3)
    assert int(post.best_rotation[0]) == true
    assert offsets[int(post.best_offset[0])].tolist() == [1.0, -2.0, 0.0]


def test_the_symmetry_axis_of_a_tilted_map_goes_to_z() -> None:
    volume = phantom()
    tilt = (rotation_y(25.0) @ rotation_x(-10.0)).float()
    axis = tilt.double() @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    found, score = symmetry_axis_rotation(rotate_volume(volume, tilt), "C6")
    turned_axis = found @ axis
    assert math.degrees(math.acos(min(1.0, float(turned_axis[2])))) < 2.0
    assert score > 0.9


@pytest.mark.parametrize("symmetrize_during", [False, True])
def test_random_start_recovers_the_object_its_hand_and_consistent_poses(symmetrize_during: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    volume = phantom()
    n = 48
    true = random_rotations(n, generator).float()
    # Picked rotations: the true z axis give or take 4°, any in-plane angle.
    spin = rotation_z(torch.rand(n, generator=generator, dtype=torch.float64) * 360).float()
    wobble = rotation_x(torch.randn(n, generator=generator, dtype=torch.float64) * 4).float()
    picked = true @ spin @ wobble
    pairs = [
        subtomogram(volume, true[i], tuple(torch.randint(-1, 2, (3,), generator=generator).tolist()), 0.5,
                     generator)
        for i in range(n)
    ]  # fmt: skip
    data, weights = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def load(indices: list[int]) -> Subtomograms:
        return local_frame(data[indices], weights[indices], picked[indices])

    result = de_novo_model(
        load, n, box=BOX, iterations=12, batch_size=32, step_deg=15.0, sigma_tilt_deg=10.0, offset_range_px=2.0,
        symmetry="C6", symmetrize_during=symmetrize_during, tau2_fudge=4.0, mask_radius_px=8.0,
        initial_cutoff_per_pixel=0.12, final_cutoff_per_pixel=0.3,
    )  # fmt: skip
    # The map matches the object (up to a turn about z) better than its mirror image.
    best = {}
    for mirror in (False, True):
        reference = volume.flip(0) if mirror else volume
        best[mirror] = max(
            float(torch.corrcoef(torch.stack([rotate_volume(result.model, rotation_z(float(a)).float()).flatten(),
                                              reference.flatten()]))[0, 1])
            for a in range(0, 60, 3)
        )  # fmt: skip
    assert best[False] > 0.85 and best[False] > best[True] + 0.1, best
    # Every particle's pose is the truth turned by one common rotation (modulo C6).
    found = picked.double() @ result.rotations
    relative = true.double().transpose(1, 2) @ found
    ops = symmetry_rotations("C6")
    anchor = relative[int(torch.argmax(result.best_probability))]
    spread = [
        min(math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(anchor.T @ op @ r)) - 1) / 2))))
            for op in ops)
        for r in relative
    ]  # fmt: skip
    assert np.median(spread) < 12.0, np.median(spread)
    assert len(result.history) == 12 and result.history[-1]["cutoff_per_pixel"] == pytest.approx(0.3)
