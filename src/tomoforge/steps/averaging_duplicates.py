"""Step ``averaging.remove_duplicates``: drop particles that sit on top of a later one, as RELION does.

The rule is that of ``relion_star_handler --remove_duplicates DIST`` (RELION 5, ``removeDuplicatedParticles`` in
``metadata_table.cpp``): particles are grouped by tomogram and, in each, taken in the order of the particle list; a
particle is discarded when *any* particle after it in the list (discarded or not) lies within ``DIST`` Å of it
(distance ≤ ``DIST``), so of a close pair the later one is kept, and a chain of close particles keeps only its last.
Positions are :attr:`~tomoforge.models.Particle.position_angstrom` (Å from the tomogram's centre voxel, refined
shifts already folded in), the centres RELION computes as coordinate − origin shift. Picks laid on overlapping
surfaces (``picking.surfaces``, ``picking.vesicles``) or template-matching peaks found twice are the usual
duplicates; after a refinement, particles that converged onto the same lattice position are.

Inputs: ``particles`` (a ``particles`` artifact) and ``tomograms`` (the tomograms they were picked in, for the
Dynamo and Scipion exports and the pictures). Output: a ``particles`` artifact of the kept particles, in their order
and with the set's pixel size, box size and symmetry, plus ``removed.json`` (per tomogram: the indices in the input
list of the removed particles and their number) and, when any was removed, ``particles_removed.star`` (RELION 5;
the ``_removed.star`` RELION writes beside its output; group labels that are not integers numbered over the whole
input set, the numbering in ``removed.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DuplicateRemovalParams", "duplicate_mask", "remove_duplicates"]

_CELL_MARGIN = 1e-5
"""Grid cells are ``(1 + margin)·DIST/2`` wide, so two points within ``DIST`` are never more than two cells apart
along an axis despite rounding, and two points in one cell are at most ``0.87·DIST`` apart."""
_MAX_CELLS_PER_AXIS = 2**30
"""Beyond this many cells along an axis the rounding margin above no longer holds: the search goes pair by pair."""
_BLOCK = 1024
"""Rows and columns of one distance block of the pair-by-pair search."""


class DuplicateRemovalParams(BaseModel):
    """Parameters of ``averaging.remove_duplicates``."""

    min_distance_angstrom: float = Field(
        30.0,
        gt=0,
        description="A particle with a later particle of its tomogram this close or closer is removed "
        "(relion_star_handler --remove_duplicates), Å.",
    )


def _duplicate_mask_blocks(positions: np.ndarray, min_distance: float) -> np.ndarray:
    """The RELION rule pair by pair, in ``_BLOCK`` × ``_BLOCK`` distance blocks (exact, O(n²) time)."""
    import numpy as np

    n = len(positions)
    removed = np.zeros(n, dtype=bool)
    limit = min_distance * min_distance
    for a in range(0, n, _BLOCK):
        rows = positions[a : a + _BLOCK]
        row_index = np.arange(a, a + len(rows))
        found = np.zeros(len(rows), dtype=bool)
        for b in range(a, n, _BLOCK):
            columns = positions[b : b + _BLOCK]
            d2 = sum((rows[:, None, axis] - columns[None, :, axis]) ** 2 for axis in range(3))
            later = np.arange(b, b + d2.shape[1])[None, :] > row_index[:, None]
            found |= ((d2 <= limit) & later).any(axis=1)
            if found.all():
                break
        removed[a : a + len(rows)] = found
    return removed


def duplicate_mask(positions: np.ndarray, min_distance: float) -> np.ndarray:
    """Which particles of one tomogram RELION's ``--remove_duplicates`` discards.

    Particle ``i`` is removed when some ``j > i`` (removed or not) has ``|p_i − p_j| ≤ min_distance``.

    Parameters
    ----------
    positions
        Array ``(n, 3)``: the particles' positions in Å, in the order of the particle list.
    min_distance
        The distance in Å (> 0) at or below which two particles are duplicates.

    Returns
    -------
    numpy.ndarray
        Booleans ``(n,)``, True for a removed particle.

    Notes
    -----
    The points are binned in cubic cells a little over ``min_distance / 2`` wide. Two points in one cell are
    always duplicates, so all but the last of each cell are removed outright; the last is compared with every
    point of the 124 cells around it, at most ``124·n`` distances in all however the points cluster. Each step
    of that comparison holds O(n) numbers. Grids too fine for the coordinates (``min_distance`` below about
    1e-9 of the points' extent) fall back to an exact comparison of all pairs in blocks.
    """
    import numpy as np

    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (n, 3), got {pos.shape}")
    if not min_distance > 0:
        raise ValueError(f"min_distance must be > 0, got {min_distance}")
    n = len(pos)
    if n < 2:
        return np.zeros(n, dtype=bool)
    cell = min_distance / 2 * (1 + _CELL_MARGIN)
    scaled = (pos - pos.min(axis=0)) / cell
    if not float(scaled.max()) < _MAX_CELLS_PER_AXIS:
        return _duplicate_mask_blocks(pos, min_distance)
    cells = np.floor(scaled).astype(np.int64)
    # Cell indices ranked per axis, so the key of a cell stays small whatever the extent of the points.
    values = [np.unique(cells[:, a]) for a in range(3)]
    sizes = [len(v) for v in values]
    if sizes[0] * sizes[1] * sizes[2] >= 2**62:
        return _duplicate_mask_blocks(pos, min_distance)
    ranks = np.stack([np.searchsorted(values[a], cells[:, a]) for a in range(3)], axis=1)
    keys = (ranks[:, 0] * sizes[1] + ranks[:, 1]) * sizes[2] + ranks[:, 2]
    order = np.lexsort((np.arange(n), keys))  # by cell, then by place in the list
    cell_keys, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    removed = np.ones(n, dtype=bool)
    last = order[starts + counts - 1]  # the last particle of each cell: the only one that may be kept
    removed[last] = False
    last_cells = cells[last]
    last_pos = pos[last]
    limit = min_distance * min_distance
    # Rank along each axis of the cell `offset` cells away from each last particle's (-1: no point there).
    shifted = []
    for a in range(3):
        per_offset = []
        for offset in range(-2, 3):
            target = last_cells[:, a] + offset
            where = np.searchsorted(values[a], target)
            hit = values[a][np.minimum(where, sizes[a] - 1)] == target
            per_offset.append(np.where(hit, where, -1))
        shifted.append(per_offset)
    open_ = np.ones(len(last), dtype=bool)  # last particles not found duplicated yet
    for ox in range(-2, 3):
        for oy in range(-2, 3):
            for oz in range(-2, 3):
                if ox == oy == oz == 0:
                    continue  # the rest of its own cell comes before the last particle
                rx, ry, rz = shifted[0][ox + 2], shifted[1][oy + 2], shifted[2][oz + 2]
                mine = np.flatnonzero(open_ & (rx >= 0) & (ry >= 0) & (rz >= 0))
                if not len(mine):
                    continue
                key = (rx[mine] * sizes[1] + ry[mine]) * sizes[2] + rz[mine]
                slot = np.searchsorted(cell_keys, key)
                slot = np.minimum(slot, len(cell_keys) - 1)
                occupied = cell_keys[slot] == key
                mine, slot = mine[occupied], slot[occupied]
                if not len(mine):
                    continue
                # Every particle of each neighbouring cell, paired with that cell's last particle.
                sizes_here = counts[slot]
                pair_of = np.repeat(np.arange(len(mine)), sizes_here)
                first = np.cumsum(sizes_here) - sizes_here
                within = np.arange(len(pair_of)) - first[pair_of]
                others = order[starts[slot][pair_of] + within]
                owner = mine[pair_of]
                d2 = ((pos[others] - last_pos[owner]) ** 2).sum(axis=1)
                duplicated = (d2 <= limit) & (others > last[owner])
                open_[owner[duplicated]] = False
    removed[last[~open_]] = True
    return removed


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    record = json.loads((outputs["particles"].path / "removed.json").read_text(encoding="utf-8"))
    return {
        ts_id: {"kept": entry["kept"], "removed": entry["removed"]}
        for ts_id, entry in record["tomograms"].items()
    }


def _methods(params: DuplicateRemovalParams) -> str:
    return (
        "Duplicate particles were removed as relion_star_handler --remove_duplicates "
        f"{params.min_distance_angstrom:g} does (RELION; Scheres 2012, J. Struct. Biol. 180, 519-530): within "
        "each tomogram, a particle was discarded when a particle later in the list lay within "
        f"{params.min_distance_angstrom:g} Å of it."
    )


@step(
    name="averaging.remove_duplicates",
    version="1",
    inputs={
        "particles": InputSpec(kind="particles", description="The particles to clean of duplicates."),
        "tomograms": InputSpec(kind="tomograms", description="The tomograms the particles are in."),
    },
    outputs={"particles": "particles"},
    summary=_summary,
    methods=_methods,
)
def remove_duplicates(params: DuplicateRemovalParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Remove, in each tomogram, every particle that has a later particle within the minimum distance."""
    import numpy as np

    from tomoforge.io.relion5 import write_relion_particles
    from tomoforge.steps._particles import read_particles_artifact, write_particles_artifact
    from tomoforge.steps._tomograms import read_tomograms
    from tomoforge.workflow.fsutil import atomic_write_text

    particle_set = read_particles_artifact(inputs.path("particles"))
    tomograms = read_tomograms(inputs.path("tomograms"))
    ts_ids = particle_set.ts_ids()
    names = sorted(set(ts_ids))
    known = {t.ts_id for t in tomograms}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"the particles lie in tomograms that are not in the tomograms input: {', '.join(unknown)} "
            f"(the tomograms are {', '.join(sorted(known))})"
        )
    tomogram_of = np.array(ts_ids, dtype=str)
    positions = particle_set.positions_angstrom()
    removed = np.zeros(particle_set.n_particles, dtype=bool)
    record: dict[str, dict[str, object]] = {}
    for ts_id in ctx.progress(len(names), "removing duplicates").wrap(names):
        mine = np.flatnonzero(tomogram_of == ts_id)  # in the order of the list
        gone = mine[duplicate_mask(positions[mine], params.min_distance_angstrom)]
        removed[gone] = True
        record[ts_id] = {
            "particles": len(mine),
            "kept": len(mine) - len(gone),
            "removed": len(gone),
            "removed_indices": gone.tolist(),
        }
        ctx.logger.info(
            "%s: %d of %d particles removed as duplicates (within %g Å of a later one), %d kept",
            ts_id,
            len(gone),
            len(mine),
            params.min_distance_angstrom,
            len(mine) - len(gone),
        )
    ctx.logger.info(
        "%d of %d particles removed, %d kept",
        int(removed.sum()),
        particle_set.n_particles,
        int((~removed).sum()),
    )
    out = ctx.work_dir / "particles"
    out.mkdir()
    everyone = particle_set.particles
    kept = particle_set.model_copy(update={"particles": [everyone[i] for i in np.flatnonzero(~removed)]})
    write_particles_artifact(out, kept, tomograms, picture_half_depth_angstrom=params.min_distance_angstrom)
    report: dict[str, object] = {
        "min_distance_angstrom": params.min_distance_angstrom,
        "tomograms": record,
    }
    if removed.any():
        dropped = particle_set.model_copy(
            update={"particles": [everyone[i] for i in np.flatnonzero(removed)]}
        )
        # RELION numbers groups; labels that are not integers get the numbers of the whole input set.
        labels = sorted({p.group for p in everyone if p.group is not None})
        if not all(label.lstrip("-").isdigit() for label in labels):
            numbers = {label: str(k + 1) for k, label in enumerate(labels)}
            dropped = dropped.model_copy(
                update={
                    "particles": [
                        p if p.group is None else p.model_copy(update={"group": numbers[p.group]})
                        for p in dropped.particles
                    ]
                }
            )
            report["removed_star_group_numbers"] = numbers
        write_relion_particles(dropped, out / "particles_removed.star")
    atomic_write_text(out / "removed.json", json.dumps(report, indent=1) + "\n")
    return {"particles": out}
