"""Issue 5 imaging targets on a 512x512x300 CT on this machine: volume load (cold and cached)
and calcium scoring.  Prints one JSON object.

    .venv/bin/python bench/bench_imaging.py [--repeat 3] [--workdir /tmp/voxa-bench-imaging]

Cold load: the stored series is read from the archive, parsed, sorted and assembled (the
cache file is removed before each run and written in the background, as ``voxa serve`` does).
Cached: the same series again, memory-mapped from the cache.  Calcium: as the calcium tool
scores it (the heart region found first, then the score inside it), the whole 300-slice volume
(bones included: the worst case), and a 60-slice block, non-contrast synthetic chest CT with its
calcifications.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from voxa.analysis.calcium import score_calcium
from voxa.analysis.calcium_region import heart_region
from voxa.config import Settings
from voxa.imaging.series import flush_cache_writes, load_series_volume
from voxa.runtime import Runtime
from voxa.testing.synthetic import ct_chest, dataset_to_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/voxa-bench-imaging"))
    args = ap.parse_args()
    data = args.workdir / "data"
    fresh = not data.exists()
    rt = Runtime.open(Settings(data_dir=data, fsync=False))
    try:
        if fresh:
            for ds in ct_chest(0, slices=300, contrast=False).datasets():
                assert rt.archive.ingest(dataset_to_bytes(ds), source="bench").ok
        with rt.archive.index.read() as conn:
            series_uid = conn.execute(text("SELECT series_instance_uid FROM series")).scalar_one()
        cache = data / "cache" / "volumes"
        cold, cached = [], []
        for _ in range(args.repeat):
            flush_cache_writes()
            shutil.rmtree(cache, ignore_errors=True)
            t = time.perf_counter()
            volume = load_series_volume(rt.archive, series_uid)
            cold.append(time.perf_counter() - t)
            flush_cache_writes()
            t = time.perf_counter()
            volume = load_series_volume(rt.archive, series_uid)
            np.asarray(volume.voxels[150]).sum()  # touch one slice of the map
            cached.append(time.perf_counter() - t)
        hu = np.asarray(volume.voxels)
        spacing = volume.spacing_mm
        whole, heart, region_s, tool_s = [], [], [], []
        centre = hu.shape[0] // 2
        for _ in range(args.repeat):
            # as the calcium tool does it: the heart region first, then the score inside it
            t = time.perf_counter()
            mask, _ = heart_region(volume, calcium_threshold_hu=130.0)
            region_s.append(time.perf_counter() - t)
            tool_score = score_calcium(hu, pixel_spacing_mm=(spacing[1], spacing[2]), slice_thickness_mm=spacing[0],
                                       slice_increment_mm=spacing[0], kvp=120, roi=mask if mask.any() else None)
            tool_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            score = score_calcium(hu, pixel_spacing_mm=(spacing[1], spacing[2]), slice_thickness_mm=spacing[0],
                                  slice_increment_mm=spacing[0], kvp=120)
            whole.append(time.perf_counter() - t)
            t = time.perf_counter()
            score_calcium(hu[centre - 30:centre + 30], pixel_spacing_mm=(spacing[1], spacing[2]),
                          slice_thickness_mm=spacing[0], slice_increment_mm=spacing[0], kvp=120,
                          max_lesion_volume_mm3=3000)
            heart.append(time.perf_counter() - t)
        print(json.dumps({
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
            "shape": list(hu.shape),
            "volume_load_cold_s": round(statistics.median(cold), 3),
            "volume_load_cached_s": round(statistics.median(cached), 4),
            "calcium_in_heart_region_s": round(statistics.median(tool_s), 3),
            "of_which_heart_region_s": round(statistics.median(region_s), 3),
            "lesions_in_heart_region": len(tool_score.lesions),
            "calcium_whole_volume_s": round(statistics.median(whole), 3),
            "calcium_60_slices_s": round(statistics.median(heart), 3),
            "lesions_whole_volume": len(score.lesions),
            "targets": {"volume_load_cold_s": 1.0, "volume_load_cached_s": 0.2, "calcium_s": 1.0},
        }, indent=1))
    finally:
        rt.close()


if __name__ == "__main__":
    main()
