"""A map's hand against the simulator's true map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tomoforge.averaging import centre_crop_or_pad, fourier_shell_correlation
from tomoforge.geometry import rotate_volume, rotation_z
from tomoforge.io.mrc import read_mrc
from tomoforge.picking import rescale_reference
from tomoforge.simulate.oracle import envelope_mask


def hand_scores(map_file: Path, true_map: Path, *, angle_step_deg: int = 1) -> tuple[float, float]:
    """Mean FSC over 65–26 Å (where the hand shows) of ``map_file`` against the true map and against its mirror
    image, each turned about z (in steps of ``angle_step_deg`` over 60°) and shifted to fit best, within the true
    map's envelope."""
    mrc = read_mrc(map_file)
    found = torch.tensor(np.array(mrc.data), dtype=torch.float64)
    box, pixel = found.shape[0], float(mrc.voxel_size_angstrom[0])
    reference = read_mrc(true_map)
    truth = centre_crop_or_pad(
        rescale_reference(torch.tensor(np.array(reference.data), dtype=torch.float64),
                          float(reference.voxel_size_angstrom[0]), pixel),
        box,
    )  # fmt: skip
    shells = slice(round(box * pixel / 65.0), round(box * pixel / 26.0) + 1)
    scores = []
    for candidate in (truth, truth.flip(0)):
        envelope = envelope_mask(candidate, pixel_size_angstrom=pixel)
        best = -2.0
        for angle in range(0, 60, angle_step_deg):
            turn = rotation_z(float(angle)).double()
            turned, mask = rotate_volume(candidate, turn), rotate_volume(envelope, turn)
            cc = torch.fft.ifftn(torch.fft.fftn(found) * torch.fft.fftn(turned * mask).conj()).real
            shift = tuple(int(s) for s in np.unravel_index(int(torch.argmax(cc)), found.shape))
            placed, moved = (torch.roll(v, shifts=shift, dims=(0, 1, 2)) for v in (turned, mask))
            best = max(best, float(fourier_shell_correlation(found, placed, mask=moved)[shells].mean()))
        scores.append(best)
    return scores[0], scores[1]
