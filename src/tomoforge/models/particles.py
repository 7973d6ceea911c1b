"""Subtomogram particles: positions and orientations in tomograms."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BeforeValidator, Field, PositiveInt, field_validator

from tomoforge.models._base import FrozenModel, Matrix3, MutableModel, TsId, Vector3, reject_bool

__all__ = ["HalfSet", "Particle", "ParticleSet"]

ROTATION_TOLERANCE = 1e-4
"""Largest allowed deviation of R·Rᵀ from I, and of det R from +1."""

_IDENTITY: Matrix3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
_SYMMETRY_PATTERN = re.compile(r"^(C[1-9][0-9]*|D[1-9][0-9]*|T|O|I[1-4]?)$")

HalfSet = Annotated[Literal[1, 2], BeforeValidator(reject_bool)]
"""Gold-standard half-set label: 1 or 2."""


def _check_rotation(matrix: Matrix3) -> Matrix3:
    r = matrix
    worst = 0.0
    for i in range(3):
        for j in range(3):
            dot = r[i][0] * r[j][0] + r[i][1] * r[j][1] + r[i][2] * r[j][2]
            worst = max(worst, abs(dot - (1.0 if i == j else 0.0)))
    if worst > ROTATION_TOLERANCE:
        raise ValueError(
            f"rotation_matrix is not orthonormal: max |R·Rᵀ - I| = {worst:.3g} > {ROTATION_TOLERANCE:g}"
        )
    det = (
        r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0])
    )
    if abs(det - 1.0) > ROTATION_TOLERANCE:
        raise ValueError(
            f"rotation_matrix has determinant {det:.6g}; a proper rotation needs +1 (not a mirror)"
        )
    return matrix


class Particle(FrozenModel):
    """One particle in one tomogram.

    Vectors are in (x, y, z) order (not the zyx order of array axes). The rotation is active and
    acts on column vectors: a point ``p`` of the reference box (in Å from the box centre) lies at
    ``position_angstrom + R @ p`` in the tomogram, positions being relative to the tomogram's centre
    voxel (Z//2, Y//2, X//2).
    """

    ts_id: TsId = Field(description="Identifier of the tomogram (its tilt series) the particle is in.")
    position_angstrom: Vector3 = Field(
        description="Particle centre (x, y, z) in Å relative to the tomogram centre voxel (Z//2, Y//2, X//2)."
    )
    rotation_matrix: Matrix3 = Field(
        default=_IDENTITY,
        description="3x3 proper rotation (rows), active, column-vector convention: maps reference-box "
        "coordinates (x, y, z) into tomogram coordinates.",
    )
    group: str | None = Field(
        default=None, description="Grouping label, e.g. the virus or filament the particle is on."
    )
    score: float | None = Field(
        default=None, description="Picking or alignment score (higher is better), if any."
    )
    half_set: HalfSet | None = Field(
        default=None, description="Gold-standard half set, 1 or 2; None if unassigned."
    )
    class_number: PositiveInt | None = Field(
        default=None, description="Class assignment (1-based), if classified."
    )
    prior_normal: Vector3 | None = Field(
        default=None,
        description="Unit vector (x, y, z), e.g. the local membrane normal, used as an orientation prior.",
    )

    @field_validator("rotation_matrix")
    @classmethod
    def _proper_rotation(cls, value: Matrix3) -> Matrix3:
        return _check_rotation(value)

    @field_validator("prior_normal")
    @classmethod
    def _unit_normal(cls, value: Vector3 | None) -> Vector3 | None:
        if value is not None:
            norm = math.sqrt(value[0] ** 2 + value[1] ** 2 + value[2] ** 2)
            if abs(norm - 1.0) > ROTATION_TOLERANCE:
                raise ValueError(f"prior_normal must be a unit vector, its length is {norm:.6g}")
        return value

    def rotation(self) -> np.ndarray:
        """Return the rotation matrix as a float64 (3, 3) array."""
        return np.array(self.rotation_matrix, dtype=np.float64)


class ParticleSet(MutableModel):
    """A set of particles, possibly from several tomograms, with shared box and symmetry information."""

    particles: list[Particle] = Field(default_factory=list, description="The particles.")
    pixel_size_angstrom: float | None = Field(
        default=None, gt=0.0, description="Voxel size in Å of extracted subtomograms and references, if set."
    )
    box_size_px: PositiveInt | None = Field(
        default=None, description="Edge length of the cubic subtomogram box in voxels, if set."
    )
    symmetry: str = Field(
        default="C1",
        description="Point-group symmetry of the particle: Cn, Dn, T, O, I or I1-I4 (upper-cased).",
    )

    @field_validator("symmetry")
    @classmethod
    def _check_symmetry(cls, value: str) -> str:
        upper = value.strip().upper()
        if not _SYMMETRY_PATTERN.fullmatch(upper):
            raise ValueError(f"unknown symmetry {value!r}; expected Cn, Dn, T, O, I or I1-I4 (n >= 1)")
        return upper

    @property
    def n_particles(self) -> int:
        """Number of particles."""
        return len(self.particles)

    def positions_angstrom(self) -> np.ndarray:
        """Return positions as a float64 array of shape (N, 3), (x, y, z) in Å."""
        return np.array([p.position_angstrom for p in self.particles], dtype=np.float64).reshape(-1, 3)

    def rotation_matrices(self) -> np.ndarray:
        """Return rotations as a float64 array of shape (N, 3, 3)."""
        return np.array([p.rotation_matrix for p in self.particles], dtype=np.float64).reshape(-1, 3, 3)

    def ts_ids(self) -> list[str]:
        """Return the tomogram id of each particle, in order."""
        return [p.ts_id for p in self.particles]

    def count_per_tomogram(self) -> dict[str, int]:
        """Return the number of particles in each tomogram, keyed by ts_id (sorted by id)."""
        counts = Counter(p.ts_id for p in self.particles)
        return dict(sorted(counts.items()))

    def for_tomogram(self, ts_id: str) -> list[Particle]:
        """Return the particles of one tomogram, in order."""
        return [p for p in self.particles if p.ts_id == ts_id]

    @classmethod
    def from_arrays(
        cls,
        ts_ids: str | Sequence[str],
        positions_angstrom: np.ndarray,
        rotation_matrices: np.ndarray | None = None,
        *,
        half_sets: Sequence[int | None] | None = None,
        scores: Sequence[float | None] | None = None,
        pixel_size_angstrom: float | None = None,
        box_size_px: int | None = None,
        symmetry: str = "C1",
    ) -> ParticleSet:
        """Build a set from arrays (the inverse of :meth:`positions_angstrom` / :meth:`rotation_matrices`).

        Parameters
        ----------
        ts_ids
            One tomogram id for all particles, or one per particle.
        positions_angstrom
            Array of shape (N, 3), (x, y, z) in Å relative to each tomogram's centre voxel.
        rotation_matrices
            Array of shape (N, 3, 3); identity if omitted.
        half_sets, scores
            Optional per-particle values (length N).
        pixel_size_angstrom, box_size_px, symmetry
            Set-level fields.

        Returns
        -------
        ParticleSet
        """
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"positions_angstrom must have shape (N, 3), got {pos.shape}")
        n = pos.shape[0]
        rot = (
            np.broadcast_to(np.eye(3), (n, 3, 3))
            if rotation_matrices is None
            else np.asarray(rotation_matrices)
        )
        if rot.shape != (n, 3, 3):
            raise ValueError(f"rotation_matrices must have shape ({n}, 3, 3), got {rot.shape}")
        ids = [ts_ids] * n if isinstance(ts_ids, str) else list(ts_ids)
        halves = [None] * n if half_sets is None else list(half_sets)
        score_list = [None] * n if scores is None else list(scores)
        for name, values in (("ts_ids", ids), ("half_sets", halves), ("scores", score_list)):
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} particles")
        particles = [
            Particle.model_validate(
                {
                    "ts_id": ids[i],
                    "position_angstrom": pos[i].tolist(),
                    "rotation_matrix": rot[i].tolist(),
                    "half_set": halves[i],
                    "score": score_list[i],
                }
            )
            for i in range(n)
        ]
        return cls(
            particles=particles,
            pixel_size_angstrom=pixel_size_angstrom,
            box_size_px=box_size_px,
            symmetry=symmetry,
        )
