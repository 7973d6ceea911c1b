"""The 3D refinement kernel: noise-free subtomograms of a known object, turned into their true poses and moved back
by their true shifts, sum into half maps equal to the object."""

from __future__ import annotations

import torch

from subtomogram_phantom import BOX, phantom, random_rotations, subtomogram
from tomoforge.averaging import soft_sphere_mask
from tomoforge.averaging.initial_model import Subtomograms, local_frame
from tomoforge.averaging.subtomogram_refine import half_maps, half_sums, undo_shifts


def test_true_poses_and_shifts_give_the_object_in_both_halves() -> None:
    generator = torch.Generator().manual_seed(4)
    volume = phantom()
    n = 24
    poses = random_rotations(n, generator).float()
    shifts = torch.randint(-2, 3, (n, 3), generator=generator)
    pairs = [subtomogram(volume, poses[i], tuple(shifts[i].tolist()), 0.0, generator) for i in range(n)]
    turned = local_frame(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), poses)
    # The shift in the local frame is the tomogram-frame shift turned back by the pose.
    local = (poses.double().transpose(1, 2) @ shifts.double()[:, :, None])[:, :, 0]
    batch = undo_shifts(turned, local)
    sigma2 = torch.ones(BOX)  # noise-free: any white noise model (one value per shell, up to the corners)
    first, second = (Subtomograms(batch.data[s], batch.weights[s]) for s in (slice(0, 12), slice(12, None)))
    sums = {1: half_sums(first, sigma2), 2: half_sums(second, sigma2)}
    mask = soft_sphere_mask(BOX, radius_px=8.0, edge_px=2.0)
    maps = half_maps(sums, symmetry="C1", mask=mask)
    for made in (maps.half1, maps.half2, maps.map):
        c = torch.corrcoef(torch.stack([(made * mask).flatten(), (volume * mask).flatten()]))[0, 1]
        assert float(c) > 0.95, float(c)
    assert float(maps.fsc_half_maps[1 : BOX // 3].min()) > 0.9
