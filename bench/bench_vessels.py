#!/usr/bin/env python3
"""bench_vessels.py - vessel analysis on a CTA-size volume: segmentation, centreline, measurements.

Builds (untimed) a synthetic CTA of ``--slices`` x ``--rows``² voxels (default 300 x 512 x 512,
0.625 mm slices, 0.4 mm pixels, about 190 x 205 x 205 mm) with a small vessel tree from
:mod:`voxa.testing.vessel_phantom`: a curved main vessel (radius 2 mm, arc of 120 degrees,
50 % stenosis) with a straight oblique side branch (radius 1.5 mm, 40 % stenosis) leaving it,
a second, unconnected straight vessel, a large contrast-filled chamber, calcium-like spots,
Gaussian blur (0.3 mm) and noise (20 HU SD).

Then times :func:`voxa.analysis.vessels.analyse_vessel` between two points on each vessel: the
work runs in a region of interest (ROI) around the two points (``--roi-margin-mm``, 20 mm by
default), as an interactive tool does; ``--roi-margin-mm -1`` grows over the whole volume.
Phases are timed separately (region growing, centreline, cross-sections, stenosis), with and
without vesselness gating. Target (docs/analysis-vessels.md): under 10 s per vessel on a
2-core machine. Prints one JSON line per run plus the accuracy against the analytic truth.
Not a test: run it by hand, ``.venv/bin/python bench/bench_vessels.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from voxa.analysis.vessels import (
    PatientPoint,
    extract_centerline,
    grow_region,
    measure_cross_sections,
    measure_stenosis,
    roi_around,
)
from voxa.testing.vessel_phantom import (
    ArcTube,
    Sphere,
    StenosisSpec,
    StraightTube,
    Tube,
    VesselPhantom,
    vessel_phantom,
)

BRANCH_AT_MM = 25.0  # arc length along the main vessel where the side branch leaves


def build(slices: int, rows: int) -> tuple[VesselPhantom, dict[str, Tube]]:
    sz, sp = 0.625, 0.4
    extent = np.array([slices * sz, rows * sp, rows * sp])
    c = extent / 2
    main = ArcTube(
        centre_mm=tuple(c + [0.0, 10.0, -10.0]),
        normal=(0.8, 0.3, 0.5),
        start_direction=(0.0, 0.0, 1.0),
        bend_radius_mm=45.0,
        angle_deg=120.0,
        radius_mm=2.0,
        stenoses=(StenosisSpec(centre_mm=45.0, length_mm=10.0, percent=50.0),),
        hu=420.0,
    )
    branch_dir = np.array([0.6, -0.5, 0.6])
    branch = StraightTube(
        start_mm=tuple(main.point_at(BRANCH_AT_MM)),
        direction=tuple(branch_dir / np.linalg.norm(branch_dir)),
        length_mm=50.0,
        radius_mm=1.5,
        stenoses=(StenosisSpec(centre_mm=25.0, length_mm=8.0, percent=40.0),),
        hu=420.0,
    )
    other = StraightTube(
        start_mm=tuple(c + [-60.0, -50.0, 40.0]),
        direction=(0.8, 0.3, -0.2),
        length_mm=90.0,
        radius_mm=2.5,
        hu=400.0,
    )
    chamber = Sphere(tuple(c + [-20.0, 45.0, 45.0]), 28.0, 350.0)
    calcium = [Sphere(tuple(c + off), 1.2, 900.0) for off in ([30, -40, -30], [-40, 20, -50], [10, -60, 50])]
    phantom = vessel_phantom(
        [main, branch, other],
        distractors=[chamber, *calcium],
        shape=(slices, rows, rows),
        spacing_mm=(sz, sp, sp),
        origin_mm=(-100.0, -120.0, -300.0),
        background_hu=40.0,
        noise_sd_hu=20.0,
        blur_sigma_mm=0.3,
        supersample=3,
        seed=7,
    )
    return phantom, {"main": main, "branch": branch, "other": other}


def run_one(
    phantom: VesselPhantom,
    tube: Tube,
    *,
    margin_mm: float | None,
    min_vesselness: float | None,
    junctions_mm: tuple[tuple[float, float, float], ...] = (),
) -> dict[str, Any]:
    """Time one vessel; diameters near a branch point (``junctions_mm``, frame mm) are not
    compared, since the section there holds the branch's lumen too."""
    volume = phantom.volume
    a_s, b_s = 2.0, tube.length_mm - 2.0
    start = PatientPoint(*phantom.frame_to_patient(tube.point_at(a_s)))
    end = PatientPoint(*phantom.frame_to_patient(tube.point_at(b_s)))
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    roi = roi_around(volume, [start, end], margin_mm) if margin_mm is not None else None
    segmentation = grow_region(volume, start, roi=roi, min_vesselness=min_vesselness)
    t1 = time.perf_counter()
    centerline = extract_centerline(volume, segmentation, start, end)
    t2 = time.perf_counter()
    profile = measure_cross_sections(volume, segmentation, centerline)
    t3 = time.perf_counter()
    stenosis = measure_stenosis(profile)
    t4 = time.perf_counter()
    times = {
        "segment_s": t1 - t0,
        "centerline_s": t2 - t1,
        "cross_sections_s": t3 - t2,
        "stenosis_s": t4 - t3,
    }
    q = profile.points_voxel * np.asarray(volume.spacing_mm)
    s_true, _ = tube.project(q)
    use = profile.valid & ~profile.in_end_margin
    for junction in junctions_mm:
        use &= np.linalg.norm(q - np.asarray(junction), axis=1) > 8.0
    error = profile.diameter_mm[use] - tube.diameter_at(s_true[use])
    roi_voxels = (
        int(np.prod([s.stop - s.start for s in roi])) if roi is not None else int(np.prod(volume.shape))
    )
    truth = max((st.percent for st in tube.stenoses), default=0.0)
    return {
        "roi_margin_mm": margin_mm,
        "roi_voxels": roi_voxels,
        "min_vesselness": min_vesselness,
        **{k: round(v, 3) for k, v in times.items()},
        "total_s": round(sum(times.values()), 3),
        "mask_voxels": segmentation.voxel_count,
        "centerline_points": len(profile.arc_length_mm),
        "length_mm": round(centerline.length_mm, 2),
        "length_truth_mm": round(b_s - a_s, 2),
        "diameter_error_mm": {
            "max_abs": round(float(np.max(np.abs(error))), 3),
            "mean": round(float(np.mean(error)), 3),
            "points": int(use.sum()),
            "half_voxel_mm": 0.5 * min(volume.spacing_mm),
        },
        "stenosis_percent": round(stenosis.stenosis_percent, 1),
        "stenosis_truth_percent": truth,
        "reference_diameter_mm": round(stenosis.reference_diameter_mm, 3),
    }


def accuracy_sweep() -> None:
    """Diameter and stenosis errors over spacings, radii, stenosis grades, noise and tube shapes."""
    import itertools
    import math

    from voxa.analysis.vessels import analyse_vessel

    rng = np.random.default_rng(0)
    worst: dict[str, float] = {}
    for spacing, radius, percent, noise, kind in itertools.product(
        [(0.8, 0.5, 0.5), (0.625, 0.4, 0.4), (1.0, 0.6, 0.6)],
        [1.25, 2.0, 3.0],
        [30.0, 50.0, 70.0],
        [0.0, 20.0],
        ["straight", "arc"],
    ):
        length = 36.0
        stenoses = (StenosisSpec(length / 2, max(6.0, 3 * radius), percent),)
        tube: Tube
        if kind == "straight":
            d = np.abs(rng.normal(size=3))
            d /= np.linalg.norm(d)
            tube = StraightTube(tuple(np.full(3, 4.0 + 2 * radius)), tuple(d), length, radius, stenoses)
        else:
            normal, first = rng.normal(size=3), rng.normal(size=3)
            tube = ArcTube(
                (22.0, 22.0, 22.0),
                tuple(normal),
                tuple(first),
                12.0,
                math.degrees(length / 12.0),
                radius,
                stenoses,
            )
        shape = (int(48.0 / spacing[0]), int(48.0 / spacing[1]), int(48.0 / spacing[2]))
        phantom = vessel_phantom(
            [tube], shape=shape, spacing_mm=spacing, noise_sd_hu=noise, seed=int(rng.integers(1000))
        )
        a = PatientPoint(*phantom.frame_to_patient(tube.point_at(1.0)))
        b = PatientPoint(*phantom.frame_to_patient(tube.point_at(tube.length_mm - 1.0)))
        result = analyse_vessel(phantom.volume, a, b)
        profile = result.profile
        s_true, _ = tube.project(profile.points_voxel * np.asarray(spacing))
        use = profile.valid & ~profile.in_end_margin
        error = profile.diameter_mm[use] - tube.diameter_at(s_true[use])
        stenosis_error = (result.stenosis.stenosis_percent - percent) if result.stenosis else float("nan")
        residual_lumen_mm = 2 * radius * (1 - percent / 100)
        max_abs = float(np.max(np.abs(error)))
        half_voxel = 0.5 * min(spacing)
        row = {
            "spacing_mm": spacing,
            "radius_mm": radius,
            "percent": percent,
            "noise_sd_hu": noise,
            "tube": kind,
            "residual_lumen_pixels": round(residual_lumen_mm / min(spacing), 2),
            "diameter_max_abs_error_mm": round(max_abs, 3),
            "diameter_mean_error_mm": round(float(np.mean(error)), 3),
            "half_voxel_mm": half_voxel,
            "stenosis_error_pp": round(stenosis_error, 1),
        }
        print(json.dumps(row))
        key = "residual >= 2 pixels" if residual_lumen_mm >= 2 * min(spacing) else "residual < 2 pixels"
        worst[f"{key}: diameter error / half voxel"] = max(
            worst.get(f"{key}: diameter error / half voxel", 0.0), max_abs / half_voxel
        )
        worst[f"{key}: |stenosis error| pp"] = max(
            worst.get(f"{key}: |stenosis error| pp", 0.0), abs(stenosis_error)
        )
    print(json.dumps({k: round(v, 2) for k, v in worst.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--roi-margin-mm", type=float, default=20.0, help="-1: the whole volume")
    parser.add_argument(
        "--accuracy-sweep",
        action="store_true",
        help="instead: accuracy over 108 small phantoms (about a minute)",
    )
    args = parser.parse_args()
    if args.accuracy_sweep:
        accuracy_sweep()
        return
    t0 = time.perf_counter()
    phantom, tubes = build(args.slices, args.rows)
    print(
        json.dumps(
            {
                "phantom": list(phantom.volume.shape),
                "spacing_mm": phantom.volume.spacing_mm,
                "build_s": round(time.perf_counter() - t0, 2),
            }
        )
    )
    margin = None if args.roi_margin_mm < 0 else args.roi_margin_mm
    worst = 0.0
    for name, tube in tubes.items():
        for gate in (None, 0.2):
            junctions = (tuple(tubes["main"].point_at(BRANCH_AT_MM)),) if name == "main" else ()
            result = run_one(phantom, tube, margin_mm=margin, min_vesselness=gate, junctions_mm=junctions)
            worst = max(worst, result["total_s"])
            print(json.dumps({"vessel": name, **result}))
    print(json.dumps({"worst_total_s": round(worst, 3), "target_s": 10.0, "met": worst < 10.0}))


if __name__ == "__main__":
    main()
