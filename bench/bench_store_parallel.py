#!/usr/bin/env python3
"""bench_store_parallel.py - C-STORE ingest with several associations at once.

Each --dir is one repetition: a gen_ct.py folder (DIR/<study>/<series>/*.dcm plus
manifest.json) whose studies must be new to the target.  For every study folder
one `storescu +sd +r +sp *.dcm` process is started (one association each), all at
the same moment, with TCP_NODELAY=1 in their environment (DCMTK keeps Nagle on
otherwise; see the harness README).  gen_ct.py --studies 4 --slices 250 thus gives
four parallel associations of 250 instances each.

Reported per repetition: total instances / wall time from the common start to the
end of the last storescu (instances_per_s, MB_per_s with MB = 10^6 bytes of files),
and each association's own time.  Before sending, a C-FIND checks that no study of
the folder is on the target yet ("preexisting"); afterwards the stored instances are
counted with IMAGE-level C-FIND (disable with --no-verify).  Medians use clean
repetitions only, as bench_store.py does.

This script reuses the harness (benchlib.py, bench_store.py) from the folder given by
--harness / $HARNESS (default ../../shared/bench relative to this file).  Prints one
JSON line on stdout (test "c_store_dcmtk_parallel"); exit code 1 if any check failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("HARNESS", HERE.parent.parent / "shared" / "bench")).resolve()
sys.path.insert(0, str(HARNESS))

from bench_store import count_instances, find_ae, send_dcmtk, study_exists  # noqa: E402
from benchlib import add_nodelay_args, add_target_args, dicom_files, emit, log, median, now, quiet_pynetdicom  # noqa: E402


def one_rep(a, folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    studies = manifest["studies"]
    fae = find_ae(a)
    pre = any(study_exists(fae, a, st["study_uid"]) for st in studies)
    if pre:
        log(f"WARNING: {folder}: a study is already on the target; this does not measure real ingest")

    jobs = []
    for st in studies:
        sdir = folder / st["study_dir"]
        files = dicom_files(sdir)
        jobs.append({"study": st["study_dir"], "dir": sdir, "instances": len(files),
                     "bytes": sum(f.stat().st_size for f in files)})

    start = threading.Barrier(len(jobs) + 1)
    out: list[dict] = [{} for _ in jobs]

    def worker(i: int) -> None:
        start.wait()
        t_begin = now()
        secs, failures, msg = send_dcmtk(a, jobs[i]["dir"])
        out[i] = {"t_begin": t_begin, "t_end": now(), "seconds": secs, "failures": failures, "msg": msg}

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    t0 = now()
    start.wait()  # all storescu processes are launched together
    for t in threads:
        t.join()
    wall = max(o["t_end"] for o in out) - t0

    n = sum(j["instances"] for j in jobs)
    nbytes = sum(j["bytes"] for j in jobs)
    failures = sum(o["failures"] for o in out)
    for o in out:
        if o["msg"]:
            log(o["msg"])
    per_assoc = [{"study": j["study"], "instances": j["instances"], "seconds": round(o["seconds"], 3),
                  "instances_per_s": round(j["instances"] / o["seconds"], 1) if o["seconds"] else None,
                  "start_offset_ms": round((o["t_begin"] - t0) * 1000, 1), "failures": o["failures"]}
                 for j, o in zip(jobs, out, strict=True)]
    rep = {"dir": str(folder), "associations": len(jobs), "instances": n, "bytes": nbytes,
           "seconds": round(wall, 3), "instances_per_s": round(n / wall, 1), "MB_per_s": round(nbytes / 1e6 / wall, 1),
           "failures": failures, "stalls": 0, "preexisting": pre, "per_association": per_assoc}
    if a.verify:
        rep["verified_instances"] = count_instances(fae, a, manifest)
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p)
    p.add_argument("--dir", action="append", required=True,
                   help="gen_ct.py folder, one association per study; repeat for more repetitions")
    add_nodelay_args(p)
    p.add_argument("--no-verify", dest="verify", action="store_false")
    p.add_argument("--test-name", default="c_store_dcmtk_parallel")
    a = p.parse_args(argv)
    quiet_pynetdicom()
    if not shutil.which("storescu"):
        log("storescu not found")
        return 2

    reps = []
    for d in a.dir:
        rep = one_rep(a, Path(d))
        reps.append(rep)
        log(json.dumps({k: v for k, v in rep.items() if k != "per_association"}))
    good = [r for r in reps if not r["failures"] and not r["preexisting"]
            and r.get("verified_instances", r["instances"]) == r["instances"]]
    res = {
        "tool": f"dcmtk x{median([r['associations'] for r in reps])} parallel",
        "associations": median([r["associations"] for r in reps]),
        "reps": reps,
        "clean_reps": len(good),
        "median_instances_per_s": median([r["instances_per_s"] for r in good]),
        "median_MB_per_s": median([r["MB_per_s"] for r in good]),
        "median_seconds": median([r["seconds"] for r in good]),
        "instances_per_rep": median([r["instances"] for r in reps]),
    }
    bad = sum(r["failures"] for r in reps) + sum(
        1 for r in reps if "verified_instances" in r and r["verified_instances"] != r["instances"])
    emit(a.test_name, a, res, errors=bad, client_nodelay=a.client_nodelay)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
