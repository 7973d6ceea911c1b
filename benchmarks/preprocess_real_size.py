"""Real-size benchmark of the preprocessing chain (issue 5): import → motion → X-ray eraser → dose filter → bin.

Usage::

    .venv/bin/python benchmarks/preprocess_real_size.py [--tilts N] [--out /tmp/realsize] [--keep] [--reuse]

What it does
------------
1. **Data.** Real-size tilt movies with the ``tutorial-small`` preset's acquisition: the vendored EMPIAR-10164
   TS_01 mdoc (41 tilts, dose-symmetric order, 8 frames per tilt, 3 e⁻/Å² per tilt, 300 kV), super-resolution
   frames of 7420×7676 at 0.675 Å, the simulator's true geometry, defocus and beam-induced motion
   (:func:`tomoforge.simulate.dataset.acquisition.plan_tilt_series`, seeded exactly as
   :func:`tomoforge.simulate.generate_dataset` seeds it, so the motion truth is the one the full simulator would
   use), and the simulator's per-frame image formation and detector: dose damage, sub-pixel motion as a phase ramp,
   ``exp`` of the contrast, the K2 MTF (:func:`tomoforge.simulate.imaging.frame_intensity`), Poisson counting and
   X-ray events (:func:`tomoforge.simulate.imaging.expose`, :mod:`tomoforge.simulate.detector`), 8-bit counts
   (MRC mode 0, saturation 127, as the simulator picks for this dose). Only the specimen is cheap (the full
   potential of ``tutorial-small`` is ~15 GB): per tilt, on a 1.35 Å grid of 3888×3750 px (the motion-corrected
   pixel; 25/20 px margins around the 3838×3710 field so that motion never wraps content into the frame),

   * a Gaussian random phase texture with amplitude spectrum ``k^-1/2 · (1 − exp(−(k/k_lo)²)) · exp(−(k/k_hi)²)``,
     ``k_lo = 1/1000 Å⁻¹``, ``k_hi = 1/10 Å⁻¹``, scaled to an RMS phase of 0.1 rad, drawn anew for every tilt;
   * the preset's 20 gold beads of 100 Å at random ``(x, y)`` on the two ice surfaces (``z = ±(750 + 50) Å``),
     projected with the tilt's true angle, axis and stage shift (:func:`tomoforge.geometry.project_points`) as
     discs of projected potential ``(V_gold − V_ice) · 2√(R² − r²)``;

   the sum (as projected potential, V·Å) goes through :func:`tomoforge.simulate.imaging.contrast_spectrum` as one
   slab at depth 0 with the tilt's true defocus and astigmatism (so the images have Thon rings and dark,
   fringed gold); per frame the spectrum is multiplied by the frame's dose weights and zero-padded to the 0.675 Å
   frame grid (:func:`tomoforge.simulate.imaging.fourier_upsample_spectrum`) before the rest of
   :func:`~tomoforge.simulate.imaging.frame_intensity` (the same weights it would apply, on 4× fewer samples).
   No depth-dependent defocus, no ice or virus structure, no tilt-consistent texture. One tilt is in
   memory at a time; frames are streamed into the movie file. The mdoc is written with
   :func:`tomoforge.io.mdoc.write_tilt_series_mdoc` as the simulator writes it; the truth of motion and X-rays
   goes to ``truth/motion/TS_01.csv`` and ``truth/xrays/TS_01.csv`` in the simulator's layout.
2. **Chain.** The tutorial's steps through the CLI, one process per step, as a user runs them:
   ``tomoforge project init``; ``run import.movies`` (pixel 0.675 Å, 300 kV, as the tutorial's import form);
   ``run motion.correct --binning 2``; ``run xray.erase``; ``run dose.filter``; ``run preprocess.bin --binning 6``
   (the tutorial's "Tilt-series preprocess" bin for the small dataset, tutorial-steps.md §12); defaults otherwise.
   For every step: wall time of the process, the run's own duration, CPU time, peak RSS (GNU ``/usr/bin/time``
   ``%M``, i.e. ``ru_maxrss`` of the step's process) and the peaks of anonymous and file-backed resident memory sampled from
   ``/proc/<pid>/status`` every 0.2 s (memory-mapped MRC stacks count in RSS as file pages, which the kernel can
   drop; anonymous memory is what the step really allocates), and the 1-min load average during the step.
3. **Scores.** Motion: :func:`tomoforge.simulate.scoring.motion.score_motion` of the step's ``TS_01_motion.csv``
   against the truth (each tilt's mean offset removed), in super-resolution pixels. X-rays: every injected
   event's super-resolution pixels are moved by the shift ``motion.correct`` applied to their frame and split
   bilinearly onto the motion-corrected (binned 2) grid, where binned pixel ``j`` sits at super-resolution ``2j``
   and gets ``value / 4`` per whole super-resolution pixel (Fourier binning keeps the mean per pixel). Binned
   pixels whose expected excess reaches the grow criterion (4 SD of the image, SD from the MAD) are the event's
   "X-ray pixels"; the score is the fraction of them that ``xray.erase`` changed, the fraction of events with
   any change within 6 px, and the changed pixels and erased objects farther than 6 px from every event (false
   positives), overall, for single pixels and blobs.

The report (JSON) is written to ``--report`` (default ``/tmp/realsize_report_<N>tilts.json``); the data folder is
deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomoforge.fourier import dose_weights
from tomoforge.geometry import project_points, projection_matrices
from tomoforge.io.mdoc import write_tilt_series_mdoc
from tomoforge.io.mrc import MrcWriter, read_mrc
from tomoforge.models import Acquisition, TiltImageMovie, TiltSeriesMovies
from tomoforge.motion import apply_motion
from tomoforge.simulate.dataset.acquisition import load_acquisition, plan_tilt_series
from tomoforge.simulate.detector import detector_mtf
from tomoforge.simulate.imaging import (
    contrast_spectrum,
    expose,
    fourier_upsample_spectrum,
    frame_intensity,
    frequency_magnitude,
    interaction_constant_rad_per_volt_angstrom,
    mtf_transfer,
)
from tomoforge.simulate.potential import ICE_MEAN_INNER_POTENTIAL_VOLT
from tomoforge.simulate.presets import preset_config
from tomoforge.simulate.render import GOLD_MEAN_INNER_POTENTIAL_VOLT
from tomoforge.simulate.scoring.motion import read_motion_csv, score_motion
from tomoforge.steps._artifacts import read_motion_table, read_tilt_series

PRESET = "tutorial-small"
GRID_PIXEL_ANGSTROM = 1.35  # cheap specimen drawn at the motion-corrected pixel
GRID_MARGIN_PX = 20  # at least this many 1.35 Å pixels around the field on each side
TEXTURE_PHASE_RMS_RAD = 0.1
TEXTURE_BAND_PER_ANGSTROM = (1.0 / 1000.0, 1.0 / 10.0)
MOTION_BINNING = 2
FINAL_BINNING = 6
PEAK_CRITERION_SD = 8.0  # xray.erase defaults (Scipion form)
GROW_CRITERION_SD = 4.0
XRAY_PATCH_PX = 64  # super-resolution patch for an event's contribution to the motion-corrected sum
STEP_FILES = (
    "steps/import_movies.py",
    "steps/motion_correction.py",
    "steps/xray_eraser.py",
    "steps/dose_filter.py",
    "steps/preprocess.py",
    "motion/global_align.py",
    "preprocess/xray.py",
)


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _seed(seq: np.random.SeedSequence) -> int:
    """As ``tomoforge.simulate.dataset.generate._seed``: a 62-bit seed from a seed sequence."""
    return int(seq.generate_state(1, dtype=np.uint64)[0]) >> 2


def _even_fast(n: int) -> int:
    """Smallest even 5-smooth integer ≥ n."""
    m = n + n % 2
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


# ----------------------------------------------------------------------------------------------------------- data
def _texture_slab(
    grid_yx: tuple[int, int], generator: torch.Generator, voltage_kv: float, k: torch.Tensor
) -> torch.Tensor:
    """Band-limited Gaussian random phase texture as projected potential (V·Å) on the 1.35 Å grid."""
    k_lo, k_hi = TEXTURE_BAND_PER_ANGSTROM
    amplitude = (
        k.clamp_min(1e-12).rsqrt() * -torch.expm1(-(k / k_lo).square()) * torch.exp(-(k / k_hi).square())
    )
    amplitude[0, 0] = 0.0
    white = torch.randn(grid_yx, generator=generator, dtype=torch.float32)
    phase = torch.fft.irfftn(torch.fft.rfftn(white) * amplitude, s=grid_yx)
    phase *= TEXTURE_PHASE_RMS_RAD / float(phase.std())
    return phase / interaction_constant_rad_per_volt_angstrom(voltage_kv)


def _add_gold(slab: torch.Tensor, centres_yx_px: np.ndarray, radius_angstrom: float) -> None:
    """Add spheres' projected potential ``(V_gold − V_ice)·2√(R² − r²)`` (V·Å) at grid positions, in place."""
    pixel = GRID_PIXEL_ANGSTROM
    r_px = radius_angstrom / pixel
    h, w = slab.shape
    contrast = GOLD_MEAN_INNER_POTENTIAL_VOLT - ICE_MEAN_INNER_POTENTIAL_VOLT
    for cy, cx in centres_yx_px:
        y0, y1 = max(int(cy - r_px) - 1, 0), min(int(cy + r_px) + 2, h)
        x0, x1 = max(int(cx - r_px) - 1, 0), min(int(cx + r_px) + 2, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = torch.arange(y0, y1, dtype=torch.float32)[:, None] - float(cy)
        xx = torch.arange(x0, x1, dtype=torch.float32)[None, :] - float(cx)
        chord = 2.0 * pixel * (r_px * r_px - yy.square() - xx.square()).clamp_min(0.0).sqrt()
        slab[y0:y1, x0:x1] += contrast * chord


def generate(n_tilts: int, data: Path) -> dict[str, Any]:
    """Write ``data/frames`` (movies + mdoc) and ``data/truth`` for the first ``n_tilts`` tilts in time."""
    start = time.perf_counter()
    config = preset_config(PRESET)
    ts_id = config.tilt_series_ids[0]
    template = load_acquisition(config)
    child = np.random.SeedSequence(config.seed).spawn(len(config.tilt_series_ids))[0]
    s_geometry, s_specimen, _s_ice, s_noise, s_xray, s_texture = child.spawn(6)
    plan = plan_tilt_series(config, template, ts_id, np.random.default_rng(s_geometry))
    chosen = sorted(plan.tilts, key=lambda t: t.acquisition_order)[:n_tilts]
    if [t.acquisition_order for t in chosen] != list(range(len(chosen))):
        raise ValueError("acquisition orders of the chosen tilts are not 0 … N−1")

    pf, bin_mc = config.frame_pixel_size_angstrom, config.motion_correction_binning
    fx, fy = config.frame_size_xy_px
    frame_yx = (fy, fx)
    grid_yx = (_even_fast(fy // bin_mc + 2 * GRID_MARGIN_PX), _even_fast(fx // bin_mc + 2 * GRID_MARGIN_PX))
    fine_yx = (bin_mc * grid_yx[0], bin_mc * grid_yx[1])
    frames_dir, truth = data / "frames", data / "truth"
    for folder in (frames_dir, truth / "motion", truth / "xrays"):
        folder.mkdir(parents=True, exist_ok=True)

    # Gold beads on the two ice surfaces (Å relative to the tomogram centre).
    rng = np.random.default_rng(s_specimen)
    half = 0.45 * min(fx, fy) * pf
    radius = config.gold_diameter_angstrom / 2.0
    gold = np.stack(
        [
            rng.uniform(-half, half, config.n_gold),
            rng.uniform(-half, half, config.n_gold),
            np.where(np.arange(config.n_gold) % 2 == 0, 1.0, -1.0)
            * (config.ice_thickness_angstrom / 2 + radius),
        ],
        axis=1,
    )
    k_grid = frequency_magnitude(grid_yx, pixel_size_angstrom=GRID_PIXEL_ANGSTROM)
    mtf = mtf_transfer(
        fine_yx,
        detector_mtf(config.detector_mtf),
        detector_pixels_per_image_pixel=0.5 if config.super_resolution else 1.0,
    )
    texture = torch.Generator().manual_seed(_seed(s_texture))
    noise = torch.Generator().manual_seed(_seed(s_noise))
    xray_generator = torch.Generator().manual_seed(_seed(s_xray))
    per_pixel = config.dose_per_tilt_e_per_angstrom2 * pf * pf / plan.frames_per_tilt
    if 4 * per_pixel + 6 * math.sqrt(4 * per_pixel) + 2 + config.xray_value_range_counts[1] > 127:
        raise ValueError("counts would not fit MRC mode 0; the simulator would use mode 6 here")

    xrays: list[list[Any]] = []
    motion_rows: list[list[Any]] = []
    tilt_times = []
    n_frames = plan.frames_per_tilt
    for tilt in chosen:
        t0 = time.perf_counter()
        slab = _texture_slab(grid_yx, texture, config.voltage_kv, k_grid)
        matrix = projection_matrices(
            tilt.tilt_angle_deg,
            plan.tilt_axis_angle_deg,
            torch.tensor(tilt.shift_xy_angstrom) / GRID_PIXEL_ANGSTROM,
            plan.x_tilt_deg,
        )
        xy = project_points(torch.from_numpy(gold / GRID_PIXEL_ANGSTROM), matrix).numpy()[:, :2]
        centres = np.stack([xy[:, 1] + grid_yx[0] // 2, xy[:, 0] + grid_yx[1] // 2], axis=1)
        _add_gold(slab, centres, radius)
        spectrum = contrast_spectrum(
            slab[None],
            torch.zeros(1),
            pixel_size_angstrom=GRID_PIXEL_ANGSTROM,
            defocus_u_angstrom=tilt.defocus_u_angstrom,
            defocus_v_angstrom=tilt.defocus_v_angstrom,
            astigmatism_angle_deg=tilt.astigmatism_angle_deg,
            voltage_kv=config.voltage_kv,
            spherical_aberration_mm=config.spherical_aberration_mm,
            amplitude_contrast=config.amplitude_contrast,
            b_factor_angstrom2=config.envelope_b_factor_angstrom2,
        )
        del slab
        dose_frame = tilt.dose_e_per_angstrom2 / n_frames
        with MrcWriter(
            frames_dir / tilt.frames_file,
            (n_frames, *frame_yx),
            voxel_size_angstrom=pf,
            mode=0,
            is_stack=True,
        ) as out:
            for f in range(n_frames):
                # frame_intensity's dose weights, applied on the 1.35 Å grid before zero-padding: the same
                # weights at the same |k| (the padded frequencies are zero anyway), 4× fewer samples.
                weights = dose_weights(
                    k_grid,
                    prior_dose_e_per_angstrom2=tilt.prior_dose_e_per_angstrom2 + f * dose_frame,
                    dose_e_per_angstrom2=dose_frame,
                    voltage_kv=config.voltage_kv,
                )
                fine = fourier_upsample_spectrum(spectrum * weights, grid_yx, bin_mc)
                del weights
                intensity = frame_intensity(
                    fine,
                    shape_yx=fine_yx,
                    pixel_size_angstrom=pf,
                    voltage_kv=config.voltage_kv,
                    shift_xy_px=torch.from_numpy(plan.motion_xy_px[tilt.index, f]),
                    mtf=mtf,
                    crop_shape_yx=frame_yx,
                )
                del fine
                counts, events = expose(
                    intensity,
                    electrons_per_pixel=dose_frame * pf * pf,
                    generator=noise,
                    xray_rate_per_frame=config.xray_rate_per_frame,
                    xray_generator=xray_generator,
                    xray_value_range=config.xray_value_range_counts,
                    max_count=127,
                )
                del intensity
                out.write(counts.to(torch.int8).numpy(), f)  # 0 … 127 after the clamp
                del counts
                order, angle = tilt.acquisition_order, tilt.nominal_tilt_angle_deg
                xrays += [[order, angle, f, e.x_px, e.y_px, e.radius_px, e.value] for e in events]
                motion_rows.append([order, angle, f, *(plan.motion_xy_px[tilt.index, f] * pf).tolist()])
        del spectrum
        tilt_times.append(time.perf_counter() - t0)
        _log(
            f"generated tilt {len(tilt_times)}/{len(chosen)} ({tilt.nominal_tilt_angle_deg:+.0f}°) in {tilt_times[-1]:.1f} s"
        )

    # The mdoc, as the simulator writes it, for the chosen tilts re-indexed in angle order.
    acquisition = Acquisition.model_validate(
        {
            **template.acquisition.model_dump(),
            "microscope": "tomoforge simulator",
            "detector": f"simulated ({config.detector_mtf} MTF), cheap specimen (benchmarks/preprocess_real_size.py)",
        }
    )
    by_angle = sorted(chosen, key=lambda t: t.nominal_tilt_angle_deg)
    tilts = [
        TiltImageMovie(
            index=i,
            tilt_angle_deg=t.nominal_tilt_angle_deg,
            acquisition_order=t.acquisition_order,
            prior_dose_e_per_angstrom2=t.prior_dose_e_per_angstrom2,
            dose_e_per_angstrom2=t.dose_e_per_angstrom2,
            acquired_at=t.acquired_at,
            frames_file=Path(t.frames_file),
            frame_count=n_frames,
        )
        for i, t in enumerate(by_angle)
    ]
    write_tilt_series_mdoc(
        TiltSeriesMovies(ts_id=ts_id, acquisition=acquisition, tilts=tilts), frames_dir / f"{ts_id}.mrc.mdoc"
    )
    header = ["acquisition_order", "tilt_angle_deg", "frame", "shift_x_angstrom", "shift_y_angstrom"]
    _write_csv(truth / "motion" / f"{ts_id}.csv", header, motion_rows)
    header = ["acquisition_order", "tilt_angle_deg", "frame", "x_px", "y_px", "radius_px", "value_counts"]
    _write_csv(truth / "xrays" / f"{ts_id}.csv", header, xrays)
    movie_bytes = sum(p.stat().st_size for p in frames_dir.glob("*.mrc"))
    return {
        "n_tilts": len(chosen),
        "frames_per_tilt": n_frames,
        "frame_shape_yx": list(frame_yx),
        "grid_yx_at_1.35A": list(grid_yx),
        "n_xray_events": len(xrays),
        "movie_bytes": movie_bytes,
        "seconds": time.perf_counter() - start,
        "seconds_per_tilt": tilt_times,
    }


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------------------- chain
class _Sampler(threading.Thread):
    """Polls /proc/<pid>/status of a process's children (resident memory by kind) and /proc/loadavg."""

    def __init__(self, parent_pid: int, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.parent_pid, self.period_s = parent_pid, period_s
        self.stop = threading.Event()
        self.peak_kb: dict[str, int] = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0, "VmHWM": 0}
        self.loads: list[float] = []

    def _children(self) -> list[str]:
        try:
            return Path(f"/proc/{self.parent_pid}/task/{self.parent_pid}/children").read_text().split()
        except OSError:
            return []

    def run(self) -> None:
        last_load = 0.0
        while not self.stop.wait(self.period_s):
            for pid in self._children():
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    key, _, value = line.partition(":")
                    if key in self.peak_kb and value.strip():
                        self.peak_kb[key] = max(self.peak_kb[key], int(value.split()[0]))
            now = time.monotonic()
            if now - last_load >= 2.0:
                self.loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
                last_load = now


def run_cli(name: str, args: list[str], logs: Path) -> dict[str, Any]:
    """Run ``tomoforge ARGS`` under ``/usr/bin/time``; measure wall, CPU, peak memory and load.

    ``/usr/bin/time`` is a small fresh process, so the peak RSS it reports (``ru_maxrss`` of its child) is the
    step's own; the child of this (large) benchmark process would inherit its high-water mark through fork.
    """
    exe = Path(sys.executable).parent / "tomoforge"
    log_path, time_path = logs / f"{name}.log", logs / f"{name}.time"
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["/usr/bin/time", "-o", str(time_path), "-f", "%M %e %U %S", str(exe), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        sampler = _Sampler(proc.pid)
        sampler.start()
        code = proc.wait()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    text = log_path.read_text()
    if code != 0:
        raise RuntimeError(f"tomoforge {' '.join(args)} failed ({code}); see {log_path}:\n{text[-3000:]}")
    max_kb, _elapsed, user, system = time_path.read_text().split()[-4:]
    match = re.search(r"Run (\d+) \([^)]*\) (?:succeeded in ([0-9.]+) s|is up to date)", text)
    outputs = dict(re.findall(r"^\s+(\w+): (\S.*)$", text, flags=re.M))
    result: dict[str, Any] = {
        "command": "tomoforge " + " ".join(args),
        "wall_s": wall,
        "run_s": float(match.group(2)) if match and match.group(2) else None,
        "run_id": int(match.group(1)) if match else None,
        "cpu_s": float(user) + float(system),
        "peak_rss_gb": int(max_kb) / 1e6,  # GNU time %M is in kB
        "sampled_peak_gb": {k: v / 1e6 for k, v in sampler.peak_kb.items()},
        "load_1min_mean": float(np.mean(sampler.loads)) if sampler.loads else None,
        "load_1min_max": float(np.max(sampler.loads)) if sampler.loads else None,
        "outputs": outputs,
    }
    sampled = result["sampled_peak_gb"]
    _log(
        f"{name}: {wall:.1f} s wall, {result['cpu_s']:.0f} s CPU, peak RSS {result['peak_rss_gb']:.2f} GB "
        f"(sampled: anon ≤ {sampled['RssAnon']:.2f}, file ≤ {sampled['RssFile']:.2f}), "
        f"load {result['load_1min_mean']}"
    )
    return result


def run_chain(data: Path, project: Path, logs: Path) -> dict[str, dict[str, Any]]:
    if project.exists():
        shutil.rmtree(project)
    steps: dict[str, dict[str, Any]] = {}
    steps["project.init"] = run_cli("project_init", ["project", "init", str(project)], logs)
    p = ["-p", str(project)]
    steps["import.movies"] = imported = run_cli(
        "import_movies",
        [
            "run",
            "import.movies",
            *p,
            "--input",
            f"movies={data / 'frames'}",
            "--pixel-size-angstrom",
            "0.675",
            "--voltage-kv",
            "300",
        ],
        logs,
    )
    steps["motion.correct"] = motion = run_cli(
        "motion_correct",
        [
            "run",
            "motion.correct",
            *p,
            "--input",
            f"movies={imported['run_id']}:movies",
            "--binning",
            str(MOTION_BINNING),
        ],
        logs,
    )
    steps["xray.erase"] = xray = run_cli(
        "xray_erase",
        ["run", "xray.erase", *p, "--input", f"tilt_series={motion['run_id']}:tilt_series"],
        logs,
    )
    steps["dose.filter"] = dose = run_cli(
        "dose_filter",
        ["run", "dose.filter", *p, "--input", f"tilt_series={xray['run_id']}:tilt_series"],
        logs,
    )
    steps["preprocess.bin"] = run_cli(
        "preprocess_bin",
        [
            "run",
            "preprocess.bin",
            *p,
            "--input",
            f"tilt_series={dose['run_id']}:tilt_series",
            "--binning",
            str(FINAL_BINNING),
        ],
        logs,
    )
    for result in steps.values():
        result["outputs"] = {k: str(project / v) for k, v in result["outputs"].items()}
    return steps


# ----------------------------------------------------------------------------------------------------------- scores
def score_motion_run(data: Path, motion_folder: Path, pixel: float) -> dict[str, Any]:
    truth_csv = data / "truth" / "motion" / "TS_01.csv"
    score = score_motion(truth_csv, motion_folder / "TS_01_motion.csv", movie_pixel_size_angstrom=pixel)
    truth = read_motion_csv(truth_csv)
    spread = np.concatenate([t.shifts_xy_angstrom - t.shifts_xy_angstrom.mean(0) for t in truth.values()])
    no_correction = float(np.sqrt(np.mean(np.sum(spread**2, axis=1)))) / pixel
    data_dict = score.model_dump()
    return {
        "rms_super_res_px": data_dict.get("rms_movie_px"),
        "max_tilt_rms_super_res_px": (data_dict.get("max_tilt_rms_angstrom") or math.nan) / pixel,
        "no_correction_rms_super_res_px": no_correction,
        "tilts_matched": data_dict.get("n_tilts_matched"),
        "per_tilt_rms_super_res_px": [t["rms_movie_px"] for t in data_dict.get("tilts", [])],
    }


def score_xrays(data: Path, motion_folder: Path, xray_folder: Path, pixel: float) -> dict[str, Any]:
    (before_series,) = read_tilt_series(motion_folder)
    (after_series,) = read_tilt_series(xray_folder)
    before = read_mrc(before_series.stack_file).data
    after = read_mrc(after_series.stack_file).data
    index_of = {t.acquisition_order: t.index for t in before_series.tilts}
    shifts = read_motion_table(motion_folder / "TS_01_motion.csv")
    b = MOTION_BINNING
    h, w = before.shape[-2:]
    events: dict[int, list[dict[str, float]]] = {}
    with (data / "truth" / "xrays" / "TS_01.csv").open() as f:
        for row in csv.DictReader(f):
            events.setdefault(int(row["acquisition_order"]), []).append({k: float(v) for k, v in row.items()})
    erased_table: dict[int, list[tuple[float, float]]] = {}
    with (xray_folder / "TS_01_xrays.csv").open() as f:
        for row in csv.DictReader(f):
            erased_table.setdefault(int(row["tilt_index"]), []).append(
                (float(row["y_px"]), float(row["x_px"]))
            )
    records = []
    changed_total = false_pixels = pixels_total = false_objects = objects_total = 0
    for order, index in sorted(index_of.items()):
        image_before = np.asarray(before[index])
        changed = image_before != np.asarray(after[index])
        sample = image_before[::7, ::7]
        background = float(np.median(sample))
        sd = 1.4826 * float(np.median(np.abs(sample - background)))
        image_after = np.asarray(after[index])
        near = np.zeros_like(changed)
        frames, shift_angstrom = shifts[order]
        shift_px = {int(fr): s / pixel for fr, s in zip(frames, shift_angstrom, strict=True)}
        centres = []
        for e in events.get(order, []):
            r = int(e["radius_px"])
            dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
            inside = dy**2 + dx**2 <= e["radius_px"] ** 2
            ys, xs = e["y_px"] + dy[inside], e["x_px"] + dx[inside]
            keep = (ys >= 0) & (ys < b * h) & (xs >= 0) & (xs < b * w)
            sx, sy = shift_px[int(e["frame"])]
            # The event's exact contribution to the motion-corrected sum: motion.correct is linear, so it is
            # apply_motion of a patch holding only the event, with the shift the step applied to that frame
            # (Fourier shift and crop: ringing included). The patch starts at an even super-resolution pixel,
            # so its binned pixel m is binned pixel y0 / 2 + m of the image.
            half = XRAY_PATCH_PX // 2
            y0, x0 = 2 * (int(e["y_px"]) // 2) - half, 2 * (int(e["x_px"]) // 2) - half
            patch = torch.zeros((1, XRAY_PATCH_PX, XRAY_PATCH_PX), dtype=torch.float64)
            patch[0, ys[keep].astype(int) - y0, xs[keep].astype(int) - x0] = e["value_counts"]
            shift = torch.tensor([[sx, sy]], dtype=torch.float64)
            contribution = apply_motion(patch, shift, binning=b).numpy()
            excess = {
                (y0 // b + my, x0 // b + mx): float(contribution[my, mx])
                for my, mx in zip(*np.nonzero(np.abs(contribution) >= GROW_CRITERION_SD * sd), strict=True)
                if 0 <= y0 // b + my < h and 0 <= x0 // b + mx < w
            }
            excess = excess or {(0, 0): 0.0}
            pixels = [p for p, v in excess.items() if v >= GROW_CRITERION_SD * sd]
            dark = [p for p, v in excess.items() if v <= -GROW_CRITERION_SD * sd]
            hit = [bool(changed[p]) for p in pixels]
            cy, cx = (e["y_px"] - sy) / b, (e["x_px"] - sx) / b
            centres.append((cy, cx))
            y0, y1 = max(int(cy) - 6, 0), min(int(cy) + 7, h)
            x0, x1 = max(int(cx) - 6, 0), min(int(cx) + 7, w)
            near[y0:y1, x0:x1] = True
            records.append(
                {
                    "acquisition_order": order,
                    "frame": int(e["frame"]),
                    "radius_px": e["radius_px"],
                    "value_counts": e["value_counts"],
                    "expected_peak_sd": max(excess.values(), default=0.0) / sd,
                    "xray_pixels": len(pixels),
                    "xray_pixels_erased": sum(hit),
                    "ringing_pixels": len(dark),
                    "ringing_pixels_erased": sum(bool(changed[p]) for p in dark),
                    "residual_max_sd": max(
                        (abs(float(image_after[p]) - background) / sd for p in pixels + dark), default=0.0
                    ),
                    "detected": bool(changed[y0:y1, x0:x1].any()),
                    "in_edge_band": bool(min(cy, cx, h - 1 - cy, w - 1 - cx) < 4),
                }
            )
        changed_total += int(changed.sum())
        false_pixels += int((changed & ~near).sum())
        pixels_total += changed.size
        for y, x in erased_table.get(index, []):
            objects_total += 1
            if not any(abs(y - cy) <= 6 and abs(x - cx) <= 6 for cy, cx in centres):
                false_objects += 1

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            return {"events": 0}
        pixels = sum(r["xray_pixels"] for r in rows)
        return {
            "events": len(rows),
            "events_detected_fraction": sum(r["detected"] for r in rows) / len(rows),
            "xray_pixels": pixels,
            "xray_pixels_erased_fraction": sum(r["xray_pixels_erased"] for r in rows) / max(pixels, 1),
            "ringing_pixels": sum(r["ringing_pixels"] for r in rows),
            "ringing_pixels_erased": sum(r["ringing_pixels_erased"] for r in rows),
            "events_residual_below_grow_criterion_fraction": sum(
                r["residual_max_sd"] < GROW_CRITERION_SD for r in rows
            )
            / len(rows),
            "residual_max_sd_median": float(np.median([r["residual_max_sd"] for r in rows])),
        }

    strong = [r for r in records if r["expected_peak_sd"] >= PEAK_CRITERION_SD and not r["in_edge_band"]]
    return {
        "all": summary(records),
        "single_pixel": summary([r for r in records if r["radius_px"] == 0]),
        "blobs": summary([r for r in records if r["radius_px"] > 0]),
        f"expected_peak_ge_{PEAK_CRITERION_SD:g}sd_not_edge": summary(strong),
        "changed_pixels": changed_total,
        "changed_pixels_away_from_events_fraction": false_pixels / max(pixels_total, 1),
        "erased_objects": objects_total,
        "erased_objects_away_from_events": false_objects,
        "events": records,
    }


# ----------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tilts", type=int, default=41, help="tilts to generate and process (first N in time)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/realsize"), help="work folder (data + project)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder at the end")
    parser.add_argument("--reuse", action="store_true", help="reuse data already generated in --out")
    parser.add_argument(
        "--report", type=Path, default=None, help="JSON report (default /tmp/realsize_report_<N>tilts.json)"
    )
    args = parser.parse_args()
    if not 1 <= args.tilts <= 41:
        raise SystemExit("--tilts must be 1 … 41")
    report_path = args.report or Path(f"/tmp/realsize_report_{args.tilts}tilts.json")
    data, project, logs = args.out / "data", args.out / "project", args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1] / "src" / "tomoforge"
    report: dict[str, Any] = {
        "preset": PRESET,
        "tilts": args.tilts,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "source_sha256": {f: hashlib.sha256((root / f).read_bytes()).hexdigest()[:12] for f in STEP_FILES},
    }
    need = args.tilts * 8 * 7420 * 7676 * (1 + 3 * 4 / 4 / 8) + 2e9
    free = shutil.disk_usage(args.out).free
    if not args.reuse and free < need:
        raise SystemExit(f"{free / 1e9:.0f} GB free under {args.out}, need about {need / 1e9:.0f} GB")
    try:
        mdoc = data / "frames" / "TS_01.mrc.mdoc"
        if args.reuse and mdoc.is_file():
            report["generation"] = json.loads((data / "generation.json").read_text())
            _log("reusing the generated data")
        else:
            if data.exists():
                shutil.rmtree(data)
            _log(f"generating {args.tilts} real-size tilt movies under {data}")
            report["generation"] = generate(args.tilts, data)
            (data / "generation.json").write_text(json.dumps(report["generation"], indent=1))
        report["steps"] = run_chain(data, project, logs)
        motion_folder = Path(report["steps"]["motion.correct"]["outputs"]["tilt_series"])
        xray_folder = Path(report["steps"]["xray.erase"]["outputs"]["tilt_series"])
        pixel = preset_config(PRESET).frame_pixel_size_angstrom
        report["motion_score"] = score_motion_run(data, motion_folder, pixel)
        report["xray_score"] = score_xrays(data, motion_folder, xray_folder, pixel)
        report["disk_bytes"] = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
        report["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    finally:
        report_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        _log(f"report: {report_path}")
        if not args.keep:  # only what this script made, then the folder if nothing else is in it
            for folder in (data, project, logs):
                shutil.rmtree(folder, ignore_errors=True)
            if args.out.is_dir() and not any(args.out.iterdir()):
                args.out.rmdir()
    _print_summary(report)


def _print_summary(report: dict[str, Any]) -> None:
    gen = report["generation"]
    print(
        f"\ndata: {gen['n_tilts']} tilts × {gen['frames_per_tilt']} frames of {gen['frame_shape_yx']} "
        f"({gen['movie_bytes'] / 1e9:.1f} GB) generated in {gen['seconds']:.0f} s"
    )
    print(
        f"{'step':16} {'wall s':>8} {'run s':>8} {'CPU s':>8} {'peak RSS GB':>12} {'anon GB':>8} {'file GB':>8} {'load':>5}"
    )
    for name, s in report["steps"].items():
        sampled = s["sampled_peak_gb"]
        load = f"{s['load_1min_mean']:.1f}" if s["load_1min_mean"] is not None else "-"
        print(
            f"{name:16} {s['wall_s']:8.1f} {s['run_s'] or 0:8.1f} {s['cpu_s']:8.1f} {s['peak_rss_gb']:12.2f} "
            f"{sampled['RssAnon']:8.2f} {sampled['RssFile']:8.2f} {load:>5}"
        )
    m = report["motion_score"]
    print(
        f"motion RMS vs truth {m['rms_super_res_px']:.3f} super-res px (no correction {m['no_correction_rms_super_res_px']:.3f}, "
        f"worst tilt {m['max_tilt_rms_super_res_px']:.3f})"
    )
    x = report["xray_score"]
    for key in ("all", "single_pixel", "blobs", f"expected_peak_ge_{PEAK_CRITERION_SD:g}sd_not_edge"):
        print(f"X-rays {key}: {x[key]}")
    print(
        f"changed pixels away from events: {x['changed_pixels_away_from_events_fraction']:.2e}; erased objects "
        f"{x['erased_objects']} of which {x['erased_objects_away_from_events']} away from any event"
    )


if __name__ == "__main__":
    main()
