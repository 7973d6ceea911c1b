"""The procedural immature-HIV specimen: virus membranes, the CA-SP1 hexamer lattice, gold beads and the ice slab.

Everything here is geometry (pure data in Å, numpy arrays, deterministic for a ``numpy.random.Generator``); turning
it into a potential volume is :mod:`tomoforge.simulate.render`.

Conventions (CONVENTIONS.md): positions are ``(x, y, z)`` in Å relative to the tomogram centre (the voxel ``N // 2``
of each axis, §2); a particle's rotation ``R`` maps reference-box coordinates into the tomogram (§4) and
``R·ẑ`` is the **outward** normal of the virus surface at the particle, as refined RELION particles of this sample
show (median cosine 0.996, ``tests/geometry/test_relion_real_orientations.py``); the reference's ``+z`` (the CA
N-terminal domain) therefore points towards the membrane.

Model
-----
* A virus is an ellipsoidal lipid bilayer. Its ellipsoid (semi-axes ``radii_xyz_angstrom`` along the columns of
  ``rotation``) is the bilayer **mid-plane**; the two headgroup layers lie ``± thickness / 2`` from it.
* The CA-SP1 lattice lines the inside of the membrane on the surface *parallel* to the ellipsoid at a distance
  ``depth`` inwards: a hexamer centre is ``s − depth·n(s)`` for a point ``s`` of the ellipsoid with outward normal
  ``n(s)``. The parallel surface has the same normal at corresponding points, so the depth and the particle axis
  are exact (the closest point on the ellipsoid is found with Newton's method on its one-dimensional secular
  equation, :func:`ellipsoid_closest_point`).
* The lattice is an incomplete hexagonal lattice of ``n_patches`` domains, each with its own in-plane lattice
  direction. Each domain is a flat hexagonal lattice wrapped onto the surface about its seed by Lambert's azimuthal
  equal-area map (flat radius ``ρ = 2R sin(φ/2)`` at angular distance ``φ`` from the seed): the number of hexamers
  per area is kept exactly, and neighbour distances are stretched by ``1/cos(φ/2)`` along the radius from the seed
  and shortened by ``cos(φ/2)`` across it (±9 % at the largest domain radius used, 0.85 rad). Domains grow
  simultaneously from their seeds (at random rates) until the requested coverage is reached; a hexamer is only kept
  at least ``0.95 × spacing`` from every hexamer of other domains (which leaves grain boundaries) and
  ``0.85 × spacing`` from its own domain's, and clustered vacancies (holes of 1–3 spacings) are punched into the
  result. ``R·x̂`` is fitted to the directions of each hexamer's neighbours in its domain. This reproduces the
  incomplete, defective lattice of immature virions (a continuous but irregular lattice covering roughly two thirds
  of the membrane).

Numbers (defaults)
------------------
* Lattice spacing 75 Å between neighbouring hexamer centres (the immature CA-SP1 lattice of EMPIAR-10164; nearest
  neighbours of refined RELION particles of TS_01 are 72–75 Å apart).
* Depth 110 Å from the membrane mid-plane to the hexamer centre: the inner headgroups lie 20 Å below the mid-plane,
  the MA layer and the flexible MA–CA linker take ~50 Å, the CA-NTD layer follows ~70–105 Å below the mid-plane and
  the CA-CTD/SP1 layer below it (radial density profiles of immature virions, Briggs et al. 2009); the hexamer
  reference is centred between its NTD and CTD layers. This is an estimate to ±20 Å, not a measured value.
* Virus diameters 100–150 nm (radius 500–750 Å), bilayer headgroup separation 40 Å.
* Gold beads 10 nm, at both ice surfaces.

References
----------
.. [1] J. A. G. Briggs, J. D. Riches, B. Glass, V. Bartonova, G. Zanetti & H.-G. Kräusslich (2009). Structure and
   assembly of immature HIV. Proc. Natl. Acad. Sci. USA 106, 11090–11095. doi:10.1073/pnas.0903535106
.. [2] F. K. M. Schur, M. Obr, W. J. H. Hagen, W. Wan, A. J. Jakobi, J. M. Kirkpatrick, C. Sachse,
   H.-G. Kräusslich & J. A. G. Briggs (2016). An atomic model of HIV-1 capsid-SP1 reveals structures regulating
   assembly and maturation. Science 353, 506–508. doi:10.1126/science.aaf9620
.. [3] D. Eberly (2013). Distance from a point to an ellipse, an ellipsoid, or a hyperellipsoid. Geometric Tools
   (the secular equation of the closest point, solved here by Newton's method from a lower bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from tomoforge.picking.ellipsoid import ellipsoid_area, ellipsoid_closest_point

__all__ = [
    "DEFAULT_LATTICE_DEPTH_ANGSTROM",
    "DEFAULT_LATTICE_SPACING_ANGSTROM",
    "GoldBeads",
    "Particles",
    "Specimen",
    "Virus",
    "build_specimen",
    "ellipsoid_closest_point",
    "lattice_on_virus",
    "place_gold",
    "place_viruses",
    "random_rotation",
]

DEFAULT_LATTICE_SPACING_ANGSTROM = 75.0
DEFAULT_LATTICE_DEPTH_ANGSTROM = 110.0
_CROSS_DOMAIN_MIN_FRACTION = 0.95  # hexamers of different domains are kept at least this × spacing apart
_MAX_DOMAIN_ANGLE_RAD = 0.85  # largest angular radius of a domain: cos(φ/2) ≥ 0.91


# ------------------------------------------------------------------------------------------------------------
# Ellipsoid geometry
# ------------------------------------------------------------------------------------------------------------


def _outward_normals(points_on_surface: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit outward normals of the axis-aligned ellipsoid at points on it (its own frame)."""
    g = points_on_surface / radii**2
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


def random_rotation(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Uniformly distributed proper rotations (from normalised Gaussian quaternions): ``(3, 3)`` or ``(n, 3, 3)``."""
    quat = rng.standard_normal((1 if n is None else n, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    w, x, y, z = quat.T
    rot = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    return rot[0] if n is None else rot


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------


def _vec3(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=np.float64).reshape(3)
    return (float(v[0]), float(v[1]), float(v[2]))


@dataclass(frozen=True)
class Virus:
    """One virus particle: an ellipsoidal lipid bilayer.

    Attributes
    ----------
    id
        Identifier, unique within a specimen.
    centre_xyz_angstrom
        Centre ``(x, y, z)`` in Å relative to the tomogram centre.
    radii_xyz_angstrom
        Semi-axes of the bilayer mid-plane in Å, along the ellipsoid's own axes.
    rotation
        3×3 rotation (rows) whose columns are the ellipsoid's axes in tomogram coordinates: a point ``p`` of the
        ellipsoid's frame is at ``centre + rotation @ p``.
    membrane_thickness_angstrom
        Distance between the two headgroup layers of the bilayer.
    """

    id: int
    centre_xyz_angstrom: tuple[float, float, float]
    radii_xyz_angstrom: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
    membrane_thickness_angstrom: float = 40.0

    @classmethod
    def create(
        cls,
        id: int,
        centre_xyz_angstrom: Sequence[float] | np.ndarray,
        radii_xyz_angstrom: Sequence[float] | np.ndarray,
        rotation: Sequence[Sequence[float]] | np.ndarray | None = None,
        membrane_thickness_angstrom: float = 40.0,
    ) -> Virus:
        """Build a virus from array-likes (identity rotation when omitted)."""
        r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        rows = (_vec3(r[0]), _vec3(r[1]), _vec3(r[2]))
        return cls(
            int(id),
            _vec3(centre_xyz_angstrom),
            _vec3(radii_xyz_angstrom),
            rows,
            float(membrane_thickness_angstrom),
        )

    @property
    def centre(self) -> np.ndarray:
        """``(3,)`` centre in Å."""
        return np.asarray(self.centre_xyz_angstrom, dtype=np.float64)

    @property
    def radii(self) -> np.ndarray:
        """``(3,)`` semi-axes of the mid-plane in Å."""
        return np.asarray(self.radii_xyz_angstrom, dtype=np.float64)

    @property
    def rotation_matrix(self) -> np.ndarray:
        """``(3, 3)`` ellipsoid frame → tomogram."""
        return np.asarray(self.rotation, dtype=np.float64)

    @property
    def outer_radius_angstrom(self) -> float:
        """Radius of a sphere about the centre that contains the whole bilayer."""
        return float(self.radii.max() + self.membrane_thickness_angstrom / 2.0)

    def half_extent_xyz_angstrom(self, offset_angstrom: float = 0.0) -> np.ndarray:
        """``(3,)`` half-widths along tomogram x, y, z of the ellipsoid with semi-axes ``radii + offset``."""
        m = self.rotation_matrix * (self.radii + offset_angstrom)[None, :]
        return np.sqrt((m * m).sum(axis=1))

    def to_local(self, points_xyz_angstrom: np.ndarray) -> np.ndarray:
        """Tomogram points ``(..., 3)`` → the ellipsoid's frame (``Rᵀ·(p − centre)``)."""
        return (np.asarray(points_xyz_angstrom, dtype=np.float64) - self.centre) @ self.rotation_matrix

    def signed_distance_angstrom(self, points_xyz_angstrom: np.ndarray) -> np.ndarray:
        """Exact signed distance ``(...)`` of tomogram points to the bilayer mid-plane (positive outside)."""
        local = torch.from_numpy(np.ascontiguousarray(self.to_local(points_xyz_angstrom)))
        _, d = ellipsoid_closest_point(local, self.radii)
        return d.numpy()

    def outward_normal(self, points_xyz_angstrom: np.ndarray) -> np.ndarray:
        """``(..., 3)`` outward unit normal, in the tomogram frame, at the points' closest mid-plane points."""
        local = torch.from_numpy(np.ascontiguousarray(self.to_local(points_xyz_angstrom)))
        closest, _ = ellipsoid_closest_point(local, self.radii)
        return _outward_normals(closest.numpy(), self.radii) @ self.rotation_matrix.T


@dataclass(frozen=True, eq=False)
class Particles:
    """Hexamers of the CA-SP1 lattice (ground truth).

    Attributes
    ----------
    positions_xyz_angstrom
        ``(N, 3)`` centres in Å relative to the tomogram centre.
    rotations
        ``(N, 3, 3)`` rotations reference → tomogram (CONVENTIONS.md §4); ``R·ẑ`` is the outward surface normal,
        ``R·x̂`` the local lattice direction of the particle's domain (plus the lattice angle offset).
    virus_ids
        ``(N,)`` id of the virus each hexamer lines.
    patch_ids
        ``(N,)`` lattice domain of each hexamer, numbered from 0 within its virus.
    """

    positions_xyz_angstrom: np.ndarray
    rotations: np.ndarray
    virus_ids: np.ndarray
    patch_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.positions_xyz_angstrom.shape[0])

    @classmethod
    def empty(cls) -> Particles:
        """No particles."""
        return cls(np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @classmethod
    def concatenate(cls, parts: Sequence[Particles]) -> Particles:
        """Join particle sets (e.g. of several viruses) in order."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.positions_xyz_angstrom for p in parts]),
            np.concatenate([p.rotations for p in parts]),
            np.concatenate([p.virus_ids for p in parts]),
            np.concatenate([p.patch_ids for p in parts]),
        )


@dataclass(frozen=True, eq=False)
class GoldBeads:
    """Gold fiducials (ground truth).

    Attributes
    ----------
    positions_xyz_angstrom
        ``(N, 3)`` bead centres in Å relative to the tomogram centre.
    diameter_angstrom
        Bead diameter in Å.
    surfaces
        ``(N,)`` +1 for beads on the top ice surface (``+z``, towards the source at zero tilt), −1 for the bottom.
    """

    positions_xyz_angstrom: np.ndarray
    diameter_angstrom: float
    surfaces: np.ndarray

    def __len__(self) -> int:
        return int(self.positions_xyz_angstrom.shape[0])


@dataclass(frozen=True, eq=False)
class Specimen:
    """A procedurally built specimen: everything in Å relative to the tomogram centre.

    Attributes
    ----------
    viruses
        The virus membranes.
    particles
        The CA-SP1 hexamers lining them.
    gold
        The gold beads.
    ice_thickness_angstrom
        Thickness of the ice slab, centred on ``z = 0`` (possibly more than requested, see :func:`place_viruses`).
    field_xyz_angstrom
        Size ``(x, y, z)`` of the simulated volume, centred on the tomogram centre.
    requested_ice_thickness_angstrom
        The ice thickness asked for.
    lattice_spacing_angstrom, lattice_depth_angstrom
        Lattice parameters used.
    seed
        The seed it was built from.
    """

    viruses: tuple[Virus, ...]
    particles: Particles
    gold: GoldBeads
    ice_thickness_angstrom: float
    field_xyz_angstrom: tuple[float, float, float]
    requested_ice_thickness_angstrom: float
    lattice_spacing_angstrom: float
    lattice_depth_angstrom: float
    seed: int


# ------------------------------------------------------------------------------------------------------------
# Viruses
# ------------------------------------------------------------------------------------------------------------


def place_viruses(
    rng: np.random.Generator,
    *,
    n: int,
    field_xyz_angstrom: Sequence[float],
    ice_thickness_angstrom: float,
    radius_range_angstrom: tuple[float, float] = (500.0, 750.0),
    ellipticity: float = 0.1,
    min_gap_angstrom: float = 100.0,
    membrane_thickness_angstrom: float = 40.0,
    max_attempts: int = 2000,
) -> tuple[tuple[Virus, ...], float]:
    """Place ``n`` non-overlapping ellipsoidal viruses inside the field and the ice slab.

    Each virus has a mean radius drawn uniformly from ``radius_range_angstrom``, semi-axes ``r·(1 + ellipticity·u)``
    with ``u`` uniform in ``[−1, 1]`` per axis, and a uniformly random orientation. Viruses are placed largest first
    by rejection sampling: the whole bilayer stays inside the field laterally and inside the ice slab (centred on
    ``z = 0``) vertically, and the bounding spheres of two viruses are at least ``min_gap_angstrom`` apart.

    A virus taller than the ice cannot fit: the ice is then made thicker, to the tallest virus plus
    ``min_gap_angstrom`` (real viruses deform thin ice instead). The thickness actually used is returned.

    Parameters
    ----------
    rng
        Random generator (the result is deterministic for its state).
    n
        Number of viruses.
    field_xyz_angstrom
        Size ``(x, y, z)`` of the simulated volume in Å (centred on the tomogram centre).
    ice_thickness_angstrom
        Requested ice thickness in Å.
    radius_range_angstrom
        Range of mean mid-plane radii in Å (default 500–750 Å, i.e. 100–150 nm diameter).
    ellipticity
        Largest relative deviation of a semi-axis from the mean radius.
    min_gap_angstrom
        Smallest gap between the bounding spheres of two viruses (and the extra ice thickness when it grows).
    membrane_thickness_angstrom
        Headgroup-to-headgroup thickness of the bilayers.
    max_attempts
        Random trials per virus before giving up.

    Returns
    -------
    viruses : tuple[Virus, ...]
        The viruses, ids ``0 … n−1`` in placement order.
    ice_thickness_angstrom : float
        The ice thickness they need: ``max(requested, tallest virus + min_gap)``.

    Raises
    ------
    ValueError
        If the ice needed is thicker than the field, or the viruses do not fit laterally.
    """
    field = np.asarray(field_xyz_angstrom, dtype=np.float64).reshape(3)
    if not 0.0 <= ellipticity < 1.0:
        raise ValueError(f"ellipticity must be in [0, 1), got {ellipticity}")
    half_t = membrane_thickness_angstrom / 2.0
    shapes = []
    for _ in range(n):
        r = rng.uniform(*radius_range_angstrom)
        radii = r * (1.0 + ellipticity * rng.uniform(-1.0, 1.0, 3))
        shapes.append((radii, random_rotation(rng)))
    shapes.sort(key=lambda s: -float(s[0].max()))

    def extent(radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
        m = rot * (radii + half_t)[None, :]
        return np.sqrt((m * m).sum(axis=1))

    tallest = max((2.0 * extent(*s)[2] for s in shapes), default=0.0)
    ice = max(float(ice_thickness_angstrom), tallest + min_gap_angstrom if n else 0.0)
    if ice > field[2]:
        raise ValueError(
            f"the viruses need {ice:.0f} Å of ice but the field is only {field[2]:.0f} Å deep; "
            "make the field deeper or the viruses smaller"
        )
    placed: list[Virus] = []
    for k, (radii, rot) in enumerate(shapes):
        half = extent(radii, rot)
        lo = np.array([-field[0] / 2 + half[0], -field[1] / 2 + half[1], -ice / 2 + half[2]])
        hi = np.array([field[0] / 2 - half[0], field[1] / 2 - half[1], ice / 2 - half[2]])
        if np.any(hi < lo):
            raise ValueError(f"a virus of semi-axes {np.round(radii)} Å does not fit in the field {field} Å")
        bound = float(radii.max() + half_t)
        for _ in range(max_attempts):
            centre = rng.uniform(lo, hi)
            if all(
                np.linalg.norm(centre - v.centre) >= bound + v.outer_radius_angstrom + min_gap_angstrom
                for v in placed
            ):
                placed.append(Virus.create(k, centre, radii, rot, membrane_thickness_angstrom))
                break
        else:
            raise ValueError(
                f"could not place virus {k + 1} of {n} without overlap in {max_attempts} attempts"
            )
    return tuple(placed), ice


# ------------------------------------------------------------------------------------------------------------
# The CA-SP1 lattice
# ------------------------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _on_lattice_surface(
    directions: np.ndarray, radii: np.ndarray, depth: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points of the parallel surface at ``depth`` inside the ellipsoid, roughly along ``directions`` (own frame).

    Rays are intersected with the ellipsoid of semi-axes ``radii − depth`` and the result is projected exactly onto
    the parallel surface (closest mid-plane point ``s``, then ``s − depth·n(s)``). Returns positions and the
    outward normals there, both ``(N, 3)``.
    """
    d = _unit(directions)
    inner = d / np.sqrt(((d / (radii - depth)) ** 2).sum(-1, keepdims=True))
    closest, _ = ellipsoid_closest_point(torch.from_numpy(np.ascontiguousarray(inner)), radii)
    s = closest.numpy()
    normals = _outward_normals(s, radii)
    return s - depth * normals, normals


def _seed_directions(rng: np.random.Generator, n: int, candidates: int = 12) -> np.ndarray:
    """``(n, 3)`` well-spread random unit vectors (best of ``candidates`` uniform draws, Mitchell's algorithm)."""
    seeds: list[np.ndarray] = []
    for _ in range(n):
        trial = _unit(rng.standard_normal((candidates, 3)))
        if seeds:
            cos = trial @ np.asarray(seeds).T
            trial = trial[np.argmin(cos.max(axis=1))][None]
        seeds.append(trial[0])
    return np.asarray(seeds).reshape(n, 3)


def _domain_candidates(
    rng: np.random.Generator,
    seed_dir: np.ndarray,
    radii: np.ndarray,
    depth: float,
    spacing: float,
    max_angle: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One domain's lattice sites wrapped onto the lattice surface by the azimuthal equal-area map about its seed.

    Returns positions ``(M, 3)``, outward normals ``(M, 3)``, lattice x-directions ``(M, 3)`` (the image of the
    domain's first lattice vector under the map's differential, tangent at each site) and angular distances
    ``(M,)`` from the seed; all in the ellipsoid's frame.
    """
    seed_pos, _ = _on_lattice_surface(seed_dir[None], radii, depth)
    big_r = float(np.linalg.norm(seed_pos[0]))
    u0 = seed_pos[0] / big_r
    helper = np.array([1.0, 0.0, 0.0]) if abs(u0[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    t1 = _unit(np.cross(u0, helper))
    t2 = np.cross(u0, t1)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    e1 = math.cos(angle) * t1 + math.sin(angle) * t2  # first lattice vector direction at the seed
    e2 = np.cross(u0, e1)
    n_max = int(math.ceil(max_angle * big_r / spacing / math.sqrt(3.0) * 2.0)) + 1
    i, j = np.meshgrid(np.arange(-2 * n_max, 2 * n_max + 1), np.arange(-n_max, n_max + 1), indexing="ij")
    plane_xy = spacing * np.stack([i.ravel() + 0.5 * j.ravel(), math.sqrt(3.0) / 2.0 * j.ravel()], -1)
    rho = np.linalg.norm(plane_xy, axis=-1)
    keep = rho <= 2.0 * big_r * math.sin(max_angle / 2.0)
    plane_xy, rho = plane_xy[keep], rho[keep]
    phi = 2.0 * np.arcsin(rho / (2.0 * big_r))  # Lambert azimuthal equal-area: ρ = 2R sin(φ/2)
    v = plane_xy[:, :1] * e1 + plane_xy[:, 1:] * e2  # tangent vectors at the seed
    safe = np.where(rho > 0, rho, 1.0)[:, None]
    v_hat = np.where(rho[:, None] > 0, v / safe, e1)
    directions = np.cos(phi)[:, None] * u0 + np.sin(phi)[:, None] * v_hat
    positions, normals = _on_lattice_surface(directions, radii, depth)
    # Differential of the map applied to e1: radial part → geodesic tangent scaled by 1/cos(φ/2), transverse part
    # by cos(φ/2).
    radial_tangent = -np.sin(phi)[:, None] * u0 + np.cos(phi)[:, None] * v_hat
    transverse = np.cross(u0, v_hat)
    half_cos = np.cos(phi / 2.0)
    x_dir = ((v_hat @ e1) / half_cos)[:, None] * radial_tangent + (half_cos * (transverse @ e1))[
        :, None
    ] * transverse
    x_dir = _unit(x_dir - (x_dir * normals).sum(-1, keepdims=True) * normals)
    return positions, normals, x_dir, phi


def _fit_lattice_direction(
    positions: np.ndarray, normals: np.ndarray, x_axes: np.ndarray, domains: np.ndarray, radius: float
) -> np.ndarray:
    """Turn each x-axis about its normal onto the directions of its same-domain neighbours, modulo 60°.

    For hexamer ``i`` with neighbours ``j`` (same domain, closer than ``radius``) at in-plane angles ``αⱼ`` from the
    current x-axis, the correction is ``arg(Σⱼ exp(6iαⱼ)) / 6``, the least-squares lattice direction of a hexagonal
    neighbourhood. Hexamers without neighbours keep their x-axis. All arrays ``(N, 3)`` / ``(N,)``.
    """
    y_axes = np.cross(normals, x_axes)
    out = x_axes.copy()
    for start in range(0, len(positions), 512):
        sl = slice(start, start + 512)
        diff = positions[None, :, :] - positions[sl, None, :]  # (c, N, 3)
        dist = np.linalg.norm(diff, axis=-1)
        mask = (dist > 0) & (dist < radius) & (domains[None, :] == domains[sl, None])
        alpha = np.arctan2(
            np.einsum("cnk,ck->cn", diff, y_axes[sl]), np.einsum("cnk,ck->cn", diff, x_axes[sl])
        )
        phasor = np.where(mask, np.exp(6j * alpha), 0.0).sum(axis=1)
        delta = np.where(np.abs(phasor) > 1e-9, np.angle(phasor) / 6.0, 0.0)[:, None]
        out[sl] = np.cos(delta) * x_axes[sl] + np.sin(delta) * y_axes[sl]
    return out


def lattice_on_virus(
    rng: np.random.Generator,
    virus: Virus,
    *,
    spacing_angstrom: float = DEFAULT_LATTICE_SPACING_ANGSTROM,
    depth_below_membrane_angstrom: float = DEFAULT_LATTICE_DEPTH_ANGSTROM,
    coverage: float = 0.6,
    n_patches: int = 6,
    hole_fraction: float = 0.1,
    lattice_angle_offset_deg: float = 0.0,
) -> Particles:
    """An incomplete hexagonal CA-SP1 lattice lining the inside of a virus membrane.

    Parameters
    ----------
    rng
        Random generator (the result is deterministic for its state).
    virus
        The virus.
    spacing_angstrom
        Distance between neighbouring hexamer centres on the lattice surface (default 75 Å).
    depth_below_membrane_angstrom
        Distance from the bilayer mid-plane inwards to the hexamer centres (default 110 Å, see the module notes).
    coverage
        Fraction of the lattice surface covered by hexamers (each taking ``√3/2·spacing²``).
    n_patches
        Number of lattice domains, each with its own random in-plane lattice direction.
    hole_fraction
        Fraction of the grown lattice removed again as clustered vacancies (holes of 1–3 spacings radius).
    lattice_angle_offset_deg
        Angle, counter-clockwise about the outward normal, from the domain's lattice vector to ``R·x̂``: the
        in-plane orientation of the hexamer reference relative to its lattice neighbours.

    Returns
    -------
    Particles
        Hexamer centres, rotations (``R·ẑ`` = outward normal, ``R·x̂`` along the domain's local lattice vector,
        fitted to the hexamer's neighbours in its domain, rotated by the offset), the virus id and domain ids ``0 … n_patches−1``. Fewer than ``coverage`` asks for when the
        domains run out of room (domains are at most 0.85 rad in angular radius).
    """
    radii = virus.radii
    depth = float(depth_below_membrane_angstrom)
    if depth >= 0.9 * float((radii**2).min() / radii.max()):
        raise ValueError(f"depth {depth} Å exceeds the smallest radius of curvature of the virus")
    inner_radii = radii - depth
    area = ellipsoid_area(torch.from_numpy(np.asarray(inner_radii, dtype=np.float64)))
    hex_area = math.sqrt(3.0) / 2.0 * spacing_angstrom**2
    n_target = int(round(coverage * area / hex_area))
    n_grow = int(math.ceil(n_target / max(1.0 - hole_fraction, 1e-6)))
    if n_target <= 0 or n_patches <= 0:
        return Particles.empty()
    # Angular radius that lets n_patches domains cover the grown area with some overlap to spare.
    cap_fraction = min(1.0, 1.3 * n_grow * hex_area / area / n_patches)
    max_angle = min(_MAX_DOMAIN_ANGLE_RAD, math.acos(1.0 - 2.0 * cap_fraction))

    seeds = _seed_directions(rng, n_patches)
    growth = rng.uniform(0.6, 1.0, n_patches)
    pos_l, nrm_l, xd_l, key_l, dom_l = [], [], [], [], []
    for k in range(n_patches):
        p, nrm, xd, phi = _domain_candidates(rng, seeds[k], radii, depth, spacing_angstrom, max_angle)
        pos_l.append(p)
        nrm_l.append(nrm)
        xd_l.append(xd)
        key_l.append(phi / growth[k])
        dom_l.append(np.full(len(phi), k))
    pos, nrm, xdir = np.concatenate(pos_l), np.concatenate(nrm_l), np.concatenate(xd_l)
    key, dom = np.concatenate(key_l), np.concatenate(dom_l)
    order = np.argsort(key, kind="stable")

    min_cross = _CROSS_DOMAIN_MIN_FRACTION * spacing_angstrom
    min_same = 0.85 * spacing_angstrom
    accepted = np.zeros(len(order), dtype=np.int64)
    n_acc = 0
    for idx in order:
        if n_acc >= n_grow:
            break
        if n_acc:
            prev = accepted[:n_acc]
            dist = np.linalg.norm(pos[prev] - pos[idx], axis=-1)
            limit = np.where(dom[prev] == dom[idx], min_same, min_cross)
            if np.any(dist < limit):
                continue
        accepted[n_acc] = idx
        n_acc += 1
    chosen = accepted[:n_acc]

    # Clustered vacancies.
    keep = np.ones(n_acc, dtype=bool)
    to_remove = n_acc - n_target
    while to_remove > 0 and keep.any():
        centre = pos[chosen[rng.choice(np.flatnonzero(keep))]]
        radius = spacing_angstrom * rng.uniform(1.0, 3.0)
        hit = keep & (np.linalg.norm(pos[chosen] - centre, axis=-1) < radius)
        hits = np.flatnonzero(hit)
        if len(hits) > to_remove:  # remove the ones nearest the hole centre only
            near = np.argsort(np.linalg.norm(pos[chosen[hits]] - centre, axis=-1))[:to_remove]
            hits = hits[near]
        keep[hits] = False
        to_remove -= len(hits)
    chosen = chosen[keep]

    normals = nrm[chosen]
    x_axis = _fit_lattice_direction(pos[chosen], normals, xdir[chosen], dom[chosen], 1.2 * spacing_angstrom)
    offset = math.radians(lattice_angle_offset_deg)
    y_axis = np.cross(normals, x_axis)
    x_axis, y_axis = (
        math.cos(offset) * x_axis + math.sin(offset) * y_axis,
        -math.sin(offset) * x_axis + math.cos(offset) * y_axis,
    )
    local_rot = np.stack([x_axis, y_axis, normals], axis=-1)  # columns: R·x̂, R·ŷ, R·ẑ
    rv = virus.rotation_matrix
    positions = pos[chosen] @ rv.T + virus.centre
    rotations = np.einsum("ij,njk->nik", rv, local_rot)
    return Particles(
        positions_xyz_angstrom=positions,
        rotations=rotations,
        virus_ids=np.full(len(chosen), virus.id, dtype=np.int64),
        patch_ids=dom[chosen].astype(np.int64),
    )


# ------------------------------------------------------------------------------------------------------------
# Gold
# ------------------------------------------------------------------------------------------------------------


def place_gold(
    rng: np.random.Generator,
    *,
    n: int,
    field_xyz_angstrom: Sequence[float],
    ice_thickness_angstrom: float,
    diameter_angstrom: float = 100.0,
    surfaces: Literal["both", "top", "bottom"] = "both",
    viruses: Sequence[Virus] = (),
    min_gap_angstrom: float = 20.0,
    max_attempts: int = 2000,
) -> GoldBeads:
    """Gold beads lying inside the ice against its top and/or bottom surface.

    A bead on the top surface has its centre at ``z = +(thickness/2 − radius)``, on the bottom at
    ``z = −(thickness/2 − radius)``; ``x, y`` are uniform over the field (the whole bead inside it). Beads are at
    least ``diameter + min_gap`` apart and at least ``radius + membrane/2 + min_gap`` from every virus mid-plane.
    With ``surfaces="both"`` each bead picks a surface at random.

    Parameters
    ----------
    rng
        Random generator.
    n
        Number of beads.
    field_xyz_angstrom
        Size ``(x, y, z)`` of the simulated volume in Å.
    ice_thickness_angstrom
        Ice thickness in Å (the slab is centred on ``z = 0``).
    diameter_angstrom
        Bead diameter in Å (default 100 Å = 10 nm).
    surfaces
        ``"both"``, ``"top"`` (+z) or ``"bottom"`` (−z).
    viruses
        Viruses the beads must not overlap.
    min_gap_angstrom
        Smallest gap between beads, and between beads and membranes.
    max_attempts
        Random trials per bead before giving up.

    Returns
    -------
    GoldBeads
        Bead centres and surfaces.

    Raises
    ------
    ValueError
        If a bead cannot be placed.
    """
    field = np.asarray(field_xyz_angstrom, dtype=np.float64).reshape(3)
    radius = diameter_angstrom / 2.0
    if ice_thickness_angstrom < diameter_angstrom:
        raise ValueError("the ice is thinner than a gold bead")
    if surfaces not in ("both", "top", "bottom"):
        raise ValueError(f"surfaces must be 'both', 'top' or 'bottom', got {surfaces!r}")
    z_top = ice_thickness_angstrom / 2.0 - radius
    positions: list[np.ndarray] = []
    sides: list[int] = []
    lo, hi = -field[:2] / 2 + radius, field[:2] / 2 - radius
    for k in range(n):
        for _ in range(max_attempts):
            side = (
                (1 if rng.random() < 0.5 else -1) if surfaces == "both" else (1 if surfaces == "top" else -1)
            )
            p = np.array([*rng.uniform(lo, hi), side * z_top])
            if (
                positions
                and np.min(np.linalg.norm(np.asarray(positions) - p, axis=-1))
                < diameter_angstrom + min_gap_angstrom
            ):
                continue
            if any(
                abs(float(v.signed_distance_angstrom(p[None])[0]))
                < radius + v.membrane_thickness_angstrom / 2 + min_gap_angstrom
                for v in viruses
                if np.linalg.norm(p - v.centre) < v.outer_radius_angstrom + radius + min_gap_angstrom
            ):
                continue
            positions.append(p)
            sides.append(side)
            break
        else:
            raise ValueError(f"could not place gold bead {k + 1} of {n} in {max_attempts} attempts")
    return GoldBeads(
        positions_xyz_angstrom=np.asarray(positions, dtype=np.float64).reshape(-1, 3),
        diameter_angstrom=float(diameter_angstrom),
        surfaces=np.asarray(sides, dtype=np.int64),
    )


# ------------------------------------------------------------------------------------------------------------
# The whole specimen
# ------------------------------------------------------------------------------------------------------------


def build_specimen(
    seed: int,
    *,
    field_xyz_angstrom: Sequence[float] = (4096.0, 4096.0, 2048.0),
    ice_thickness_angstrom: float = 1600.0,
    n_viruses: int = 3,
    radius_range_angstrom: tuple[float, float] = (500.0, 750.0),
    ellipticity: float = 0.1,
    min_gap_angstrom: float = 100.0,
    membrane_thickness_angstrom: float = 40.0,
    lattice_spacing_angstrom: float = DEFAULT_LATTICE_SPACING_ANGSTROM,
    lattice_depth_angstrom: float = DEFAULT_LATTICE_DEPTH_ANGSTROM,
    coverage: float = 0.6,
    n_patches: int = 6,
    hole_fraction: float = 0.1,
    lattice_angle_offset_deg: float = 0.0,
    n_gold: int = 10,
    gold_diameter_angstrom: float = 100.0,
    gold_surfaces: Literal["both", "top", "bottom"] = "both",
) -> Specimen:
    """Build a whole specimen from a seed: viruses, their lattices, gold beads and the ice thickness.

    Each stage draws from its own child of ``numpy.random.SeedSequence(seed)`` (viruses, one per virus lattice,
    gold), so changing e.g. the number of beads leaves the viruses and lattices unchanged. Parameters are those of
    :func:`place_viruses`, :func:`lattice_on_virus` and :func:`place_gold`.

    Returns
    -------
    Specimen
        The specimen; its ``ice_thickness_angstrom`` may exceed the request when a virus is taller than the ice.
    """
    children = np.random.SeedSequence(seed).spawn(2 + n_viruses)
    viruses, ice = place_viruses(
        np.random.default_rng(children[0]),
        n=n_viruses,
        field_xyz_angstrom=field_xyz_angstrom,
        ice_thickness_angstrom=ice_thickness_angstrom,
        radius_range_angstrom=radius_range_angstrom,
        ellipticity=ellipticity,
        min_gap_angstrom=min_gap_angstrom,
        membrane_thickness_angstrom=membrane_thickness_angstrom,
    )
    lattices = [
        lattice_on_virus(
            np.random.default_rng(children[2 + k]),
            virus,
            spacing_angstrom=lattice_spacing_angstrom,
            depth_below_membrane_angstrom=lattice_depth_angstrom,
            coverage=coverage,
            n_patches=n_patches,
            hole_fraction=hole_fraction,
            lattice_angle_offset_deg=lattice_angle_offset_deg,
        )
        for k, virus in enumerate(viruses)
    ]
    gold = place_gold(
        np.random.default_rng(children[1]),
        n=n_gold,
        field_xyz_angstrom=field_xyz_angstrom,
        ice_thickness_angstrom=ice,
        diameter_angstrom=gold_diameter_angstrom,
        surfaces=gold_surfaces,
        viruses=viruses,
    )
    return Specimen(
        viruses=viruses,
        particles=Particles.concatenate(lattices),
        gold=gold,
        ice_thickness_angstrom=float(ice),
        field_xyz_angstrom=_vec3(field_xyz_angstrom),
        requested_ice_thickness_angstrom=float(ice_thickness_angstrom),
        lattice_spacing_angstrom=float(lattice_spacing_angstrom),
        lattice_depth_angstrom=float(lattice_depth_angstrom),
        seed=int(seed),
    )
