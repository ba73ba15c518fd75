#!/usr/bin/env python3
"""ratio_table.py - Voxa vs Orthanc table with ratios and the project's targets.

    ratio_table.py RESULTS.jsonl [MORE.jsonl ...] [--base orthanc] [--new voxa]

Reads the JSON lines written by archive_vs_orthanc.sh (run_suite.py, run_step.py) and
prints one markdown table: metric, base value, new value, ratio, whether the target
is met.  Ratios are always oriented so that > 1 means the new PACS (Voxa) is better:

  * throughput (instances/s, MB/s):  ratio = voxa / orthanc
  * latency and cost (ms, CPU ms):   ratio = orthanc / voxa

Targets: C-STORE ingest >= 1.5x Orthanc's rate; C-FIND latency no slower than
Orthanc (ratio >= 1.0).  Rows without a target are context.  The last record per
(label, test) wins, as in the harness's summarize.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

INGEST_TARGET = 1.5
FIND_TARGET = 1.0


def g(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def per_rep(res, key="instances_per_s"):
    reps = g(res, "reps") or []
    if not reps:
        return None
    s = " / ".join(fmt(r.get(key)) for r in reps)
    clean = g(res, "clean_reps")
    if clean is not None and clean != len(reps):
        s += f" ({clean} clean)"
    return s


def reps_x(rec):
    reps = g(rec, "results", "reps") or []
    return f"{len(reps)}x{int(g(rec, 'results', 'instances_per_rep') or 0)}" if reps else "-"


def cpu_ms_per_instance(step_rec):
    cpu = g(step_rec, "server", "cpu_s")
    n = sum(r.get("instances", 0) for r in (g(step_rec, "results", "reps") or []))
    return cpu * 1000.0 / n if cpu is not None and n else None


# (section, title, kind, target, extractor(records_by_test, records_by_step))
#   kind: "tp" higher is better; "lat" lower is better; "info" no ratio
def lat(test, *path):
    return lambda t, s: g(t.get(test), "results", *path, "median_ms")


ROWS = [
    ("C-STORE", "1 association (storescu), instances/s", "tp", INGEST_TARGET,
     lambda t, s: g(t.get("c_store_dcmtk"), "results", "median_instances_per_s")),
    ("C-STORE", "1 association, per rep (instances/s)", "info", None,
     lambda t, s: per_rep(g(t.get("c_store_dcmtk"), "results"))),
    ("C-STORE", "1 association, MB/s", "tp", None,
     lambda t, s: g(t.get("c_store_dcmtk"), "results", "median_MB_per_s")),
    ("C-STORE", "4 parallel associations, instances/s (total)", "tp", INGEST_TARGET,
     lambda t, s: g(t.get("c_store_dcmtk_parallel"), "results", "median_instances_per_s")),
    ("C-STORE", "4 parallel associations, per rep (instances/s)", "info", None,
     lambda t, s: per_rep(g(t.get("c_store_dcmtk_parallel"), "results"))),
    ("C-STORE", "4 parallel associations, MB/s", "tp", None,
     lambda t, s: g(t.get("c_store_dcmtk_parallel"), "results", "median_MB_per_s")),
    ("C-STORE", "reps x instances (1 assoc; 4 assoc)", "info", None,
     lambda t, s: f"{reps_x(t.get('c_store_dcmtk'))}; {reps_x(t.get('c_store_dcmtk_parallel'))}"),
    ("C-STORE", "loading the C-FIND set (small instances, 1 assoc), instances/s", "tp", None,
     lambda t, s: g(t.get("load_find_set"), "results", "median_instances_per_s")),
    ("C-FIND", "studies stored when queried (universal query matches)", "info", None,
     lambda t, s: g(t.get("c_find_study"), "results", "all", "matches")),
    ("C-FIND", "exact PatientID (1 match): find in open assoc (ms)", "lat", FIND_TARGET,
     lat("c_find_study", "exact", "pynetdicom_find_in_assoc")),
    ("C-FIND", "exact PatientID: assoc+find+release (ms)", "lat", FIND_TARGET,
     lat("c_find_study", "exact", "pynetdicom_assoc_find_release")),
    ("C-FIND", "wildcard PatientID prefix* (matches)", "info", None,
     lambda t, s: g(t.get("c_find_study"), "results", "wildcard", "matches")),
    ("C-FIND", "wildcard prefix*: find in open assoc (ms)", "lat", FIND_TARGET,
     lat("c_find_study", "wildcard", "pynetdicom_find_in_assoc")),
    ("C-FIND", "wildcard prefix*: assoc+find+release (ms)", "lat", FIND_TARGET,
     lat("c_find_study", "wildcard", "pynetdicom_assoc_find_release")),
    ("C-FIND", "wildcard prefix*: findscu process (ms)", "lat", FIND_TARGET,
     lat("c_find_study", "wildcard", "findscu_process")),
    ("C-FIND", "universal (all studies): assoc+find+release (ms)", "lat", FIND_TARGET,
     lat("c_find_study", "all", "pynetdicom_assoc_find_release")),
    ("C-FIND", "universal (all studies): find in open assoc (ms)", "lat", FIND_TARGET,
     lat("c_find_study", "all", "pynetdicom_find_in_assoc")),
    ("C-ECHO", "echo in open assoc (ms) [sanity]", "lat", None, lat("c_echo", "pynetdicom_echo_in_assoc")),
    ("C-ECHO", "assoc+echo+release (ms) [sanity]", "lat", None, lat("c_echo", "pynetdicom_assoc_echo_release")),
    ("C-ECHO", "echoscu process (ms) [sanity]", "lat", None, lat("c_echo", "echoscu_process")),
    ("Server", "CPU ms per stored instance, 1 assoc", "lat", None,
     lambda t, s: cpu_ms_per_instance(s.get("store_dcmtk"))),
    ("Server", "CPU ms per stored instance, 4 assoc", "lat", None,
     lambda t, s: cpu_ms_per_instance(s.get("store_parallel"))),
    ("Server", "CPU s, C-FIND step", "lat", None, lambda t, s: g(s.get("find"), "server", "cpu_s")),
    ("Server", "server cores used during 4-assoc store (mean)", "info", None,
     lambda t, s: g(s.get("store_parallel"), "machine", "server_cores")),
    ("Server", "RSS after last step (MB)", "lat", None,
     lambda t, s: next((g(r, "server", "rss_mb_after") for r in reversed(list(s.values()))
                        if g(r, "server", "rss_mb_after")), None)),
]


def others_mean(steps: dict) -> float | None:
    recs = [r for r in steps.values() if g(r, "machine", "others_cores") is not None]
    wall = sum(r.get("step_wall_s", 0) for r in recs)
    return sum(g(r, "machine", "others_cores") * r.get("step_wall_s", 0) for r in recs) / wall if wall else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--base", default="orthanc")
    p.add_argument("--new", default="voxa")
    a = p.parse_args(argv)

    tests: dict[str, dict] = {}
    steps: dict[str, dict] = {}
    for f in a.files:
        for line in Path(f).read_text().splitlines():
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            lab = rec.get("label", "?")
            tests.setdefault(lab, {})[rec.get("test")] = rec
            if rec.get("step"):
                steps.setdefault(lab, {})[rec["step"]] = rec
    B, N = a.base, a.new
    tb, tn = tests.get(B, {}), tests.get(N, {})
    sb, sn = steps.get(B, {}), steps.get(N, {})

    out = [f"| area | metric | {B} | {N} | ratio (>1 = {N} better) | target | met |",
           "|---|---|---:|---:|---:|---|---|"]
    verdicts = []
    for section, title, kind, target, fn in ROWS:
        try:
            vb, vn = fn(tb, sb), fn(tn, sn)
        except Exception:  # noqa: BLE001
            vb = vn = None
        ratio = None
        if kind in ("tp", "lat") and isinstance(vb, (int, float)) and isinstance(vn, (int, float)) and vb and vn:
            ratio = vn / vb if kind == "tp" else vb / vn
        how = {"tp": f"{N}/{B}", "lat": f"{B}/{N}"}.get(kind, "")
        rtxt = f"{ratio:.2f}x ({how})" if ratio is not None else "-"
        ttxt, met = "", ""
        if target is not None:
            ttxt = f">= {target:.1f}x"
            if ratio is not None:
                ok = ratio >= target
                met = "yes" if ok else "**no**"
                verdicts.append((section, title, ratio, target, ok))
        out.append(f"| {section} | {title} | {fmt(vb)} | {fmt(vn)} | {rtxt} | {ttxt} | {met} |")
    ob, on = others_mean(sb), others_mean(sn)
    out.append(f"| Machine | CPU used by other processes during the steps, mean (cores) | {fmt(ob)} | {fmt(on)} | "
               f" | | |")
    lb = next((g(r, "machine", "loadavg_1m_before") for r in sb.values()), None)
    ln = next((g(r, "machine", "loadavg_1m_before") for r in sn.values()), None)
    out.append(f"| Machine | load average (1 min) before the first step | {fmt(lb)} | {fmt(ln)} | | | |")
    errs = [sum((r.get("errors") or 0) + (1 if r.get("rc") else 0) for r in tests.get(x, {}).values()) for x in (B, N)]
    out.append(f"| Checks | errors reported by scripts | {errs[0]} | {errs[1]} | | | |")
    print("\n".join(out))
    print()
    print(f"Ratios: throughput = {N}/{B}; latency, CPU and RSS = {B}/{N}. Either way > 1 means {N} is better.")
    if verdicts:
        missed = [v for v in verdicts if not v[4]]
        print(f"Targets: {len(verdicts) - len(missed)} of {len(verdicts)} target rows met "
              f"(ingest >= {INGEST_TARGET}x {B}; C-FIND no slower than {B}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
