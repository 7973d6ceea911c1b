"""CONVENTIONS.md §4 on real data: RELION 5 refined HIV CA-SP1 particles of EMPIAR-10164 TS_01.

The immature CA-SP1 lattice lines the virus membrane with its C6 axis along the membrane normal, and the reference's
C6 axis is its z axis. With tomoforge's rotation ``R = A_subtomogram · A_particle`` (RELION Euler matrices), ``R·ẑ``
must therefore point along the radius of the virus sphere the particle sits on. Any transposed matrix or swapped
composition order fails this (it is checked below that they do).
"""

from pathlib import Path

import numpy as np
import starfile
import torch

from tomoforge.geometry import centre_index, relion_euler_to_matrix

DATA = Path(__file__).resolve().parents[1] / "data" / "relion5_empiar10164"


def _radial_cosines(choose):
    tomos = starfile.read(DATA / "tomograms.star")
    tomo = tomos[tomos.rlnTomoName == "TS_01"].iloc[0]
    binning = float(tomo.rlnTomoTomogramBinning)
    pixel_binned = float(tomo.rlnTomoTiltSeriesPixelSize) * binning
    size_binned = [round(float(tomo[f"rlnTomoSize{a}"]) / binning) for a in "XYZ"]
    spheres = starfile.read(DATA / "TS_01_spheres.star")
    centres = spheres[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
    centres = (centres - np.array([centre_index(n) for n in size_binned])) * pixel_binned
    radii = spheres.rlnSphereRadius.to_numpy() * pixel_binned

    particles = starfile.read(DATA / "run_data_TS_01_subset.star")["particles"]
    pos = particles[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy()
    a_sub = relion_euler_to_matrix(
        torch.tensor(
            particles[["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]].to_numpy()
        )
    )
    a_part = relion_euler_to_matrix(
        torch.tensor(particles[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy())
    )
    r = choose(a_sub, a_part).numpy()

    dist = np.linalg.norm(pos[:, None] - centres[None], axis=-1)
    nearest = np.argmin(np.abs(dist - radii[None]), axis=1)
    radial = pos - centres[nearest]
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    return np.einsum("ni,ni->n", r[:, :, 2], radial), len(particles)


def test_refined_particle_axes_point_along_the_virus_radius():
    cosines, n = _radial_cosines(lambda a_sub, a_part: a_sub @ a_part)
    assert n > 300
    assert np.median(cosines) > 0.99  # outward, as the lattice normal
    assert np.mean(cosines > 0.9) > 0.9


def test_wrong_conventions_fail_the_same_check():
    wrong = {
        "transposed": lambda a_sub, a_part: (a_sub @ a_part).transpose(-1, -2),
        "swapped order": lambda a_sub, a_part: a_part @ a_sub,
        "subtomogram only": lambda a_sub, a_part: a_sub,
    }
    for name, choose in wrong.items():
        cosines, _ = _radial_cosines(choose)
        assert np.median(np.abs(cosines)) < 0.8, name
