#!/usr/bin/env python3
"""bench_mpr.py - server-side rendering: MPR slices, slabs, curved MPR, volume rendering, rotating MIP.

Builds a 512x512x300 CT volume (default: the synthetic chest of ``voxa.testing.synthetic.ct_chest``
assembled with ``volume_from_datasets``; ``--source phantom`` for a quick numpy phantom), saves
it as ``.npy`` and memory-maps it back, as the volume cache of ``load_series_volume`` does, then
times (median of ``--repeat`` runs, after one warm-up):

* ``reslice_*``: one 512x512-class MPR image, axial / sagittal / coronal (on the voxel grid:
  copied, no interpolation) and oblique (512x512, trilinear);
* ``slab10_*``: the same with a 10 mm MIP slab;
* ``png_*``: reslice + window + PNG encoding, what ``GET .../mpr`` does after the volume is cached;
* ``curved``: a straightened curved MPR along a 200 mm curve, 60 mm wide;
* ``volume_render_512``: a 512x512 volume rendering (ct-bone, shaded) of the 256^3-max
  down-sampled volume, plus ``downsample`` (done once per volume and cached by the route);
* ``rotating_mip_36x256``: 36 MIP frames of 256x256 (once).

Target (docs/rendering.md): one MPR slice under 50 ms; a 512x512 volume rendering under about 2 s.
Prints one JSON object (milliseconds). Not a test: ``.venv/bin/python bench/bench_mpr.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _time(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    fn()  # warm-up: page cache, lazy imports
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(statistics.median(runs), 2), "min_ms": round(min(runs), 2),
            "max_ms": round(max(runs), 2), "n": repeat}


def _ct_chest_volume(slices: int, rows: int) -> Any:
    from voxa.imaging.assemble import volume_from_datasets
    from voxa.testing.synthetic import ct_chest

    return volume_from_datasets(ct_chest(0, slices=slices, rows=rows).datasets())


def _phantom_volume(slices: int, rows: int) -> Any:
    from voxa.imaging.volume import Volume

    z, y, x = np.ogrid[:slices, :rows, :rows]
    c = (rows - 1) / 2
    r2 = ((y - c) / (0.42 * rows)) ** 2 + ((x - c) / (0.48 * rows)) ** 2
    vox = np.where(r2 < 1, np.float32(40), np.float32(-1000)).astype(np.float32)
    vox = np.broadcast_to(vox, (slices, rows, rows)).copy()
    spine = ((y - 0.7 * rows) ** 2 + (x - c) ** 2) < (0.05 * rows) ** 2
    vox[np.broadcast_to(spine, vox.shape)] = 700
    aorta = ((y - 0.45 * rows - 0.05 * rows * np.sin(z / 40)) ** 2 + (x - 0.55 * rows) ** 2) < (0.03 * rows) ** 2
    vox[aorta] = 350
    vox += np.random.default_rng(0).normal(0, 15, vox.shape).astype(np.float32)
    return Volume(voxels=vox, spacing_mm=(1.0, 358.4 / rows, 358.4 / rows), origin_mm=(-179.2, -179.2, -300.0),
                  direction=np.eye(3), units="HU", modality="CT")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=("ct-chest", "phantom"), default="ct-chest")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-memmap", action="store_true", help="keep the voxels in RAM instead of a memory map")
    args = ap.parse_args()

    from voxa.imaging import mpr
    from voxa.imaging.volume import Volume
    from voxa.imaging.volume_render import render_volume
    from voxa.web.dicomweb.render import (
        PNG,
        RenderParams,
        Viewport,
        Window,
        apply_window,
        encode_image,
        to_image,
    )

    t = time.perf_counter()
    vol = _ct_chest_volume(args.slices, args.rows) if args.source == "ct-chest" else _phantom_volume(
        args.slices, args.rows)
    build_s = time.perf_counter() - t
    tmp = tempfile.TemporaryDirectory(prefix="voxa-bench-mpr-")
    if not args.no_memmap:
        path = Path(tmp.name) / "volume.npy"
        np.save(path, np.ascontiguousarray(vol.voxels))
        vol = Volume(voxels=np.load(path, mmap_mode="r"), spacing_mm=vol.spacing_mm, origin_mm=vol.origin_mm,
                     direction=vol.direction, units=vol.units, modality=vol.modality)
        np.asarray(vol.voxels).sum()  # into the page cache, as a served volume is after its first slices

    centre = mpr.volume_center_mm(vol)
    planes = {name: mpr.standard_plane(vol, name) for name in mpr.ORIENTATIONS}
    planes["oblique"] = mpr.oblique_plane(vol, centre, (0.3, -0.5, 1.0), size=512)
    window = Window(40.0, 400.0)
    results: dict[str, Any] = {}
    for name, plane in planes.items():
        results[f"reslice_{name}"] = _time(lambda p=plane: mpr.reslice(vol, p), args.repeat)
        results[f"reslice_{name}"]["size"] = list(plane.size)
    for name, plane in planes.items():
        results[f"slab10_{name}"] = _time(lambda p=plane: mpr.reslice(vol, p, slab_mm=10.0), args.repeat)

    def png(plane: mpr.Plane) -> bytes:
        image, pl = mpr.reslice(vol, plane)
        img = to_image(apply_window(image, window), Viewport(512, 512),
                       pl.pixel_spacing_mm[0] / pl.pixel_spacing_mm[1])
        return encode_image(img, RenderParams(media_type=PNG))

    for name in ("axial", "sagittal", "oblique"):
        results[f"png_{name}"] = _time(lambda p=planes[name]: png(p), args.repeat)

    theta = np.linspace(0, np.pi, 50)
    curve = np.stack([centre[0] + 60 * np.cos(theta), centre[1] + 30 * np.sin(theta),
                      centre[2] + np.linspace(-40, 40, 50)], axis=1)
    results["curved"] = _time(lambda: mpr.curved_mpr(vol, curve, width_mm=60.0), args.repeat)

    t = time.perf_counter()
    small = mpr.downsample(vol, 256)
    results["downsample_256"] = {"ms": round((time.perf_counter() - t) * 1000, 1), "shape": list(small.shape)}
    fov = mpr.volume_diagonal_mm(vol)
    vr_repeat = max(3, args.repeat // 3)
    results["volume_render_512"] = _time(
        lambda: render_volume(small, preset="ct-bone", azimuth_deg=30, elevation_deg=10, size=512, fov_mm=fov),
        vr_repeat)
    results["volume_render_512_soft_tissue"] = _time(
        lambda: render_volume(small, preset="ct-soft-tissue", azimuth_deg=30, size=512, fov_mm=fov), vr_repeat)
    t = time.perf_counter()
    mpr.rotating_mip(small, 36, "z", 256)
    results["rotating_mip_36x256"] = {"ms": round((time.perf_counter() - t) * 1000, 1)}

    out = {
        "bench": "mpr",
        "source": args.source,
        "shape": list(vol.shape),
        "spacing_mm": list(vol.spacing_mm),
        "memmap": not args.no_memmap,
        "build_s": round(build_s, 1),
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "results": results,
    }
    print(json.dumps(out, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
