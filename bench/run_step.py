#!/usr/bin/env python3
"""run_step.py - run ONE benchmark script as a named step and record it like run_suite.py does.

    run_step.py --harness DIR --step find --label voxa --results R.jsonl [--server-pid PID] \
        -- SCRIPT.py [script args ...]

The harness's run_suite.py records, for each step, the server's CPU seconds and RSS
(--server-pid) and the machine load (load average, host/client/server/others cores).
Its step runner is a closure inside its main(), so steps that run_suite.py does not
offer (the 1,000-study C-FIND set, the parallel store) go through this wrapper, which
uses run_suite.py's own /proc readers (proc_stats, host_cpu) and writes the same
fields ("step", "step_wall_s", "rc", "machine", "server").  summarize.py and
ratio_table.py read them.

SCRIPT.py is resolved against bench/ first, then the harness folder; it is run with
this interpreter (the harness venv) and must print one JSON line on stdout.
Exit code: the script's.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--harness", default=os.environ.get("HARNESS", str(HERE.parent.parent / "shared" / "bench")))
    p.add_argument("--step", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--server-pid", type=int, default=None)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- SCRIPT.py [args]")
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        p.error("no script given")
    harness = Path(a.harness).resolve()
    sys.path.insert(0, str(harness))
    from run_suite import host_cpu, proc_stats  # the harness's own /proc readers

    script = cmd[0]
    for base in (HERE, harness):
        if (base / script).is_file():
            script = str(base / script)
            break
    full = [sys.executable, script, *cmd[1:]]
    print(f"[step] {a.step} ({a.label}): {' '.join(full[1:])}", file=sys.stderr, flush=True)

    before = proc_stats(a.server_pid)
    load1 = os.getloadavg()[0]
    hb0, _ = host_cpu()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(harness), os.environ.get("PYTHONPATH")])))
    r = subprocess.run(full, stdout=subprocess.PIPE, text=True, cwd=str(harness), env=env)
    wall = time.perf_counter() - t0
    hb1, _ = host_cpu()
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = proc_stats(a.server_pid)
    tck = os.sysconf("SC_CLK_TCK")
    host_cores = (hb1 - hb0) / tck / wall
    client_cores = ((ch1.ru_utime - ch0.ru_utime) + (ch1.ru_stime - ch0.ru_stime)) / wall
    server_cores = (after["cpu_s"] - before["cpu_s"]) / wall if before and after else None

    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    rec = json.loads(lines[-1]) if lines else {"test": a.step, "label": a.label,
                                                "error": f"no JSON output, rc={r.returncode}"}
    rec["step"] = a.step
    rec["step_wall_s"] = round(wall, 2)
    rec["rc"] = r.returncode if lines else (r.returncode or 1)
    rec["machine"] = {"loadavg_1m_before": round(load1, 2), "cores": os.cpu_count(),
                      "host_busy_cores": round(host_cores, 2), "client_cores": round(client_cores, 2),
                      "server_cores": round(server_cores, 2) if server_cores is not None else None,
                      "others_cores": round(host_cores - client_cores - (server_cores or 0), 2)
                      if server_cores is not None else None}
    if before and after:
        rec["server"] = {"cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
                         "rss_mb_after": round(after["rss_mb"], 1) if after["rss_mb"] else None}
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if rec["rc"]:
        print(f"[step] {a.step} ({a.label}): exit code {rec['rc']}", file=sys.stderr, flush=True)
    return rec["rc"]


if __name__ == "__main__":
    sys.exit(main())
