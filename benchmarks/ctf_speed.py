"""Time ``tomoforge.ctf.estimate_ctf`` per image on synthetic CTF-filtered noise, on the CPU and (if present) a GPU.

Sizes: the demo's 512² at 5.4 Å (128-px tiles), a 2048² bin-2 image at 2.7 Å (256-px tiles) and the tutorial's
motion-corrected 3838×3710 at 1.35 Å (512-px tiles, its CTFFIND box); untilted and at 60° with the tilt geometry.
Prints one line per case with the mean of ``--repeats`` timed calls after one warm-up call and the defocus error.

    python benchmarks/ctf_speed.py [--device cpu cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from tomoforge.ctf import ctf_2d, estimate_ctf
from tomoforge.geometry import projection_matrices

CASES = [((512, 512), 5.4, 128), ((2048, 2048), 2.7, 256), ((3838, 3710), 1.35, 512)]


def image(shape: tuple[int, int], px: float, defocus: float, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    obj = torch.randn(shape, generator=g).to(device)
    ctf = ctf_2d(
        defocus_u_angstrom=defocus + 200.0,
        defocus_v_angstrom=defocus - 200.0,
        astigmatism_angle_deg=30.0,
        voltage_kv=300.0,
        spherical_aberration_mm=2.7,
        amplitude_contrast=0.1,
        pixel_size_angstrom=px,
        shape_yx=shape,
        b_factor_angstrom2=100.0,
        device=device,
    )
    out = torch.fft.irfft2(torch.fft.rfft2(obj) * ctf, s=shape)
    return out + 0.5 * out.std() * torch.randn(shape, generator=g).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    for name in args.device:
        device = torch.device(name)
        for shape, px, tile in CASES:
            img = image(shape, px, 30000.0, device)
            for tilt in (0.0, 60.0):
                matrix = projection_matrices(torch.tensor(tilt, dtype=torch.float64), 85.0) if tilt else None
                kwargs = dict(
                    pixel_size_angstrom=px,
                    voltage_kv=300.0,
                    spherical_aberration_mm=2.7,
                    amplitude_contrast=0.1,
                    tile_size_px=tile,
                    min_resolution_angstrom=50.0,
                    max_resolution_angstrom=5.0,
                    projection_matrix=matrix,
                )
                fit = estimate_ctf(img, **kwargs)  # type: ignore[arg-type]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.repeats):
                    fit = estimate_ctf(img, **kwargs)  # type: ignore[arg-type]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = (time.perf_counter() - start) / args.repeats
                error = 0.5 * (fit.defocus_u_angstrom + fit.defocus_v_angstrom) - 30000.0
                print(
                    f"{name:5s} {shape[1]}x{shape[0]} {px} Å tile {tile} tilt {tilt:4.0f}°: {seconds:.3f} s/image "
                    f"({fit.n_tiles} tiles, {fit.n_groups} groups), defocus error {error:+.0f} Å",
                    flush=True,
                )


if __name__ == "__main__":
    main()
