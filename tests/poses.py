"""Particle poses for the averaging tests: a rotation vector's matrix, the distance of found poses from the truth
(modulo C6) and the true poses perturbed by a known angle and distance."""

from __future__ import annotations

import math

import numpy as np
import torch

from tomoforge.averaging import symmetry_rotations
from tomoforge.models import ParticleSet


def turn(vector: np.ndarray) -> np.ndarray:
    """The rotation matrix of a rotation vector (axis times angle in radians; Rodrigues)."""
    angle = float(np.linalg.norm(vector))
    k = vector / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def c6_errors(found: ParticleSet, true: ParticleSet) -> tuple[float, float]:
    """Median angle (degrees, modulo C6 about the reference's z) and median distance (Å) to the true poses."""
    ops = symmetry_rotations("C6", dtype=torch.float64).numpy()
    angles, distances = [], []
    for p, q in zip(found.particles, true.particles, strict=True):
        relative = p.rotation().T @ q.rotation()
        angles.append(
            min(math.degrees(math.acos(np.clip((np.trace(relative @ s) - 1) / 2, -1, 1))) for s in ops)
        )
        distances.append(float(np.linalg.norm(np.subtract(p.position_angstrom, q.position_angstrom))))
    return float(np.median(angles)), float(np.median(distances))


def perturbed_particles(
    true: ParticleSet, angle_deg: float, distance_angstrom: float, seed: int
) -> ParticleSet:
    """``true`` with each particle turned by ``angle_deg`` about a random axis and moved by ``distance_angstrom``
    in a random direction (an axis, then a direction, drawn per particle from ``np.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    moved = []
    for p in true.particles:
        axis, shift = rng.normal(size=3), rng.normal(size=3)
        rotation = turn(axis / np.linalg.norm(axis) * math.radians(angle_deg))
        moved.append(
            p.model_copy(
                update={
                    "rotation_matrix": tuple(map(tuple, rotation @ p.rotation())),
                    "position_angstrom": tuple(
                        np.add(p.position_angstrom, shift / np.linalg.norm(shift) * distance_angstrom)
                    ),
                }
            )
        )
    return true.model_copy(update={"particles": moved})
