#!/usr/bin/env bash
# archive_vs_orthanc.sh - Voxa vs Orthanc 1.10.1 (Debian) on the same machine, same data, one run.
#
#   bash bench/archive_vs_orthanc.sh            # full run (~15-20 min on the 2-core VM)
#   QUICK=1 bash bench/archive_vs_orthanc.sh    # ~2 min plumbing check; numbers mean nothing
#
# Uses the shared benchmark harness (read-only, ../../shared/bench relative to this folder)
# by calling its scripts; nothing of it is copied.  In one run it
#   1. installs what is missing, like the harness does (apt: orthanc orthanc-dicomweb dcmtk
#      curl gcc libc6-dev python3-venv; pip: pydicom pynetdicom numpy httpx in $BENCH_WORK/venv);
#   2. generates the data once (harness gen_ct.py, deterministic UIDs, cached in $BENCH_WORK/data):
#        store_a_dcmtk_4x250_r{0..2}  (a) one-association store, the harness's own sets
#        par_a_4x250_r{0..2}          (b) four-association store (different UIDs)
#        vxfind_1000x2_64             (c) 1,000 studies x 1 series x 2 slices of 64x64, PatientID VXFIND1000_*
#   3. starts a private Orthanc (harness orthanc_ctl.sh start --fresh, TCP_NODELAY=1) and a
#      private `voxa serve` (fresh data folder, production settings: fsync on), both on 127.0.0.1;
#   4. runs, phase by phase and for each target in turn (orthanc, then voxa):
#        echo      harness run_suite.py --steps echo                     (sanity)
#        store     harness run_suite.py --steps store --store-tools dcmtk (a: storescu, 1 association)
#        parallel  bench_store_parallel.py via run_step.py               (b: 4 storescu at once)
#        load      harness bench_store.py (storescu) of the C-FIND set    (c: 1,000 studies)
#        find      harness bench_find.py via run_step.py                 (c: exact, prefix*, universal)
#      with `sync` between phases so one target's write-back does not land in the other's timing;
#      the server's CPU and RSS (--server-pid) and the machine load are recorded for every step;
#   5. stops the two servers it started, by PID only, and prints the harness's summarize.py table
#      plus ratio_table.py (Voxa/Orthanc ratios against the targets).
# Results: $BENCH_WORK/results/archive_vs_orthanc_<UTC stamp>.jsonl and .summary.md next to it.
#
# Knobs (environment, defaults in brackets):
#   BENCH_WORK [/tmp/voxa_bench_work]  venv, data, server folders, logs, results
#   HARNESS [<repo>/../shared/bench]    the shared harness
#   VOXA_BIN [<repo>/.venv/bin/voxa]    the voxa command to benchmark
#   QUICK [0]                           1 = tiny sizes, 1 rep (plumbing check only)
#   STORE_REPS [3] PAR_REPS [3] STORE_STUDIES [4] STORE_SLICES [250]
#   FIND_STUDIES [1000] FIND_SLICES [2] FIND_ROWS [64] FIND_REPS [10] ECHO_REPS [20]
#   ORTHANC_HTTP_PORT [18142] ORTHANC_DICOM_PORT [14342] ORTHANC_AET [ORTHANC]
#   VOXA_DICOM_PORT [14442] VOXA_HTTP_PORT [18442] VOXA_AET [VOXA]
#   BENCH_SCU_AET [BENCHSCU] BENCH_SCP_PORT [14243]  our AE (a known peer of both servers)
#   VOXA_TOML_EXTRA                     extra lines for the [voxa] table (e.g. 'fsync = false')
#   TARGETS ["orthanc voxa"]            which targets, in which order within a phase
#   SETTLE_S [2]                        pause after the sync between measurements
#   RESULTS                             output JSONL (default under $BENCH_WORK/results)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
HARNESS="${HARNESS:-$(cd "$HERE/../../shared/bench" 2>/dev/null && pwd || true)}"
[[ -n "$HARNESS" && -f "$HARNESS/run_suite.py" ]] || { echo "harness not found (set HARNESS=...)" >&2; exit 2; }
export HARNESS
export BENCH_WORK="${BENCH_WORK:-/tmp/voxa_bench_work}"
VENV="$BENCH_WORK/venv"
PY="$VENV/bin/python"
DATA="$BENCH_WORK/data"
VOXA_BIN="${VOXA_BIN:-$REPO/.venv/bin/voxa}"
QUICK="${QUICK:-0}"
STORE_REPS="${STORE_REPS:-3}"
PAR_REPS="${PAR_REPS:-3}"
STORE_STUDIES="${STORE_STUDIES:-4}"
STORE_SLICES="${STORE_SLICES:-250}"
FIND_STUDIES="${FIND_STUDIES:-1000}"
FIND_SLICES="${FIND_SLICES:-2}"
FIND_ROWS="${FIND_ROWS:-64}"
FIND_REPS="${FIND_REPS:-10}"
ECHO_REPS="${ECHO_REPS:-20}"
if [[ "$QUICK" == "1" ]]; then
    STORE_REPS=1; PAR_REPS=1; STORE_STUDIES=4; STORE_SLICES=10
    FIND_STUDIES=50; FIND_REPS=3; ECHO_REPS=3
fi
export ORTHANC_HTTP_PORT="${ORTHANC_HTTP_PORT:-18142}"
export ORTHANC_DICOM_PORT="${ORTHANC_DICOM_PORT:-14342}"
export ORTHANC_AET="${ORTHANC_AET:-ORTHANC}"
export ORTHANC_TCP_NODELAY=1
export BENCH_SCU_AET="${BENCH_SCU_AET:-BENCHSCU}"
export BENCH_SCP_PORT="${BENCH_SCP_PORT:-14243}"
VOXA_DICOM_PORT="${VOXA_DICOM_PORT:-14442}"
VOXA_HTTP_PORT="${VOXA_HTTP_PORT:-18442}"
VOXA_AET="${VOXA_AET:-VOXA}"
VOXA_DATA="$BENCH_WORK/voxa-data"
VOXA_CONF="$BENCH_WORK/voxa-bench.toml"
VOXA_LOG="$BENCH_WORK/voxa.log"
VOXA_PIDFILE="$BENCH_WORK/voxa.pid"
TARGETS="${TARGETS:-orthanc voxa}"
SETTLE_S="${SETTLE_S:-2}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
QSUFFIX=""; QNOTE=""
if [[ "$QUICK" == 1 ]]; then QSUFFIX="_quick"; QNOTE=" (QUICK: plumbing check, numbers not meaningful)"; fi
RESULTS="${RESULTS:-$BENCH_WORK/results/archive_vs_orthanc_${STAMP}${QSUFFIX}.jsonl}"
T_START=$(date +%s)
FAILED=0

log() { echo "[vs-orthanc $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
mkdir -p "$BENCH_WORK/results" "$DATA"

# one run at a time per $BENCH_WORK (servers, pid files and ports are shared)
exec 9>"$BENCH_WORK/archive_vs_orthanc.lock"
flock -n 9 || die "another archive_vs_orthanc.sh run holds $BENCH_WORK/archive_vs_orthanc.lock"

# ---------------------------------------------------------------- 1. install (idempotent, as the harness)
missing=()
for p in orthanc orthanc-dicomweb dcmtk curl gcc libc6-dev python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    [[ "$(id -u)" == 0 ]] || die "need root to install: ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [[ ! -x "$PY" ]]; then
    log "creating venv $VENV"
    /usr/bin/python3 -m venv "$VENV"
fi
if ! "$PY" -c 'import pydicom, pynetdicom, numpy, httpx' 2>/dev/null; then
    log "installing python packages into $VENV"
    "$VENV/bin/pip" install -q "pydicom>=3,<4" "pynetdicom>=3,<4" numpy httpx
fi
[[ -x "$VOXA_BIN" ]] || die "voxa command not found at $VOXA_BIN (run scripts/setup.sh, or set VOXA_BIN)"
VOXA_PY="$(dirname "$VOXA_BIN")/python"

# ---------------------------------------------------------------- servers: start/stop by PID only
ORTHANC_STARTED=0
VOXA_PID=""

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

voxa_is_ours() {  # running AND really our voxa serve (guards against a recycled PID)
    [[ -n "$VOXA_PID" ]] && kill -0 "$VOXA_PID" 2>/dev/null \
        && tr '\0' ' ' < "/proc/$VOXA_PID/cmdline" 2>/dev/null | grep -qF -- "$VOXA_DATA"
}

stop_voxa() {
    if voxa_is_ours; then
        kill -TERM "$VOXA_PID" 2>/dev/null || true
        for _ in $(seq 1 180); do kill -0 "$VOXA_PID" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$VOXA_PID" 2>/dev/null; then
            log "voxa pid $VOXA_PID did not exit on TERM within 45 s; sending KILL"
            kill -KILL "$VOXA_PID" 2>/dev/null || true
        fi
        log "voxa (pid $VOXA_PID) stopped"
    fi
    VOXA_PID=""
    rm -f "$VOXA_PIDFILE"
}

stop_orthanc() {
    if [[ "$ORTHANC_STARTED" == 1 ]]; then
        "$HARNESS/orthanc_ctl.sh" stop || true
        ORTHANC_STARTED=0
    fi
}

cleanup() {
    local rc=$?
    stop_voxa
    stop_orthanc
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_orthanc() {
    port_free "$ORTHANC_DICOM_PORT" && port_free "$ORTHANC_HTTP_PORT" \
        || die "port $ORTHANC_DICOM_PORT or $ORTHANC_HTTP_PORT is in use (set ORTHANC_DICOM_PORT/ORTHANC_HTTP_PORT)"
    log "starting Orthanc (fresh storage, TCP_NODELAY=1)"
    ORTHANC_STARTED=1
    "$HARNESS/orthanc_ctl.sh" start --fresh
    ORTHANC_PID="$(cat "$BENCH_WORK/orthanc.pid")"
}

start_voxa() {
    port_free "$VOXA_DICOM_PORT" && port_free "$VOXA_HTTP_PORT" \
        || die "port $VOXA_DICOM_PORT or $VOXA_HTTP_PORT is in use (set VOXA_DICOM_PORT/VOXA_HTTP_PORT)"
    rm -rf "$VOXA_DATA"
    mkdir -p "$VOXA_DATA"
    cat > "$VOXA_CONF" <<EOF
# written by bench/archive_vs_orthanc.sh; production settings apart from the peer list
[voxa]
aet = "$VOXA_AET"
peers = [{name = "bench", aet = "$BENCH_SCU_AET", host = "127.0.0.1", port = $BENCH_SCP_PORT}]
${VOXA_TOML_EXTRA:-}
EOF
    # no VOXA_* variable from the caller's environment may change the server's settings
    local unset_env=() v
    for v in $(compgen -e); do [[ "$v" == VOXA_* ]] && unset_env+=(-u "$v"); done
    log "starting voxa: $VOXA_BIN serve --config $VOXA_CONF --data-dir $VOXA_DATA --host 127.0.0.1 --dicom-port $VOXA_DICOM_PORT --http-port $VOXA_HTTP_PORT"
    env "${unset_env[@]}" "$VOXA_BIN" serve --config "$VOXA_CONF" --data-dir "$VOXA_DATA" --host 127.0.0.1 \
        --aet "$VOXA_AET" --dicom-port "$VOXA_DICOM_PORT" --http-port "$VOXA_HTTP_PORT" >"$VOXA_LOG" 2>&1 &
    VOXA_PID=$!
    echo "$VOXA_PID" > "$VOXA_PIDFILE"
    for _ in $(seq 1 120); do
        if ! kill -0 "$VOXA_PID" 2>/dev/null; then
            tail -n 30 "$VOXA_LOG" >&2
            VOXA_PID=""
            die "voxa exited during start-up; see $VOXA_LOG"
        fi
        if TCP_NODELAY=1 echoscu -aet "$BENCH_SCU_AET" -aec "$VOXA_AET" 127.0.0.1 "$VOXA_DICOM_PORT" >/dev/null 2>&1; then
            log "voxa started: pid $VOXA_PID, DICOM $VOXA_AET@127.0.0.1:$VOXA_DICOM_PORT, HTTP 127.0.0.1:$VOXA_HTTP_PORT"
            return 0
        fi
        sleep 0.5
    done
    die "voxa did not answer C-ECHO within 60 s; see $VOXA_LOG"
}

# target arguments of the harness scripts, by label
target_args() {
    case "$1" in
        orthanc) echo "--label orthanc --host 127.0.0.1 --port $ORTHANC_DICOM_PORT --aet $ORTHANC_AET" \
                      "--calling-aet $BENCH_SCU_AET --base-url http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web" ;;
        voxa)    echo "--label voxa --host 127.0.0.1 --port $VOXA_DICOM_PORT --aet $VOXA_AET" \
                      "--calling-aet $BENCH_SCU_AET --base-url http://127.0.0.1:$VOXA_HTTP_PORT/dicom-web" ;;
        *) die "unknown target $1" ;;
    esac
}
server_pid() { case "$1" in orthanc) echo "$ORTHANC_PID" ;; voxa) echo "$VOXA_PID" ;; esac; }

settle() { sync; sleep "$SETTLE_S"; }

# run a command; a failing benchmark is recorded (FAILED=1) but does not stop the run
try() { "$@" || { log "FAILED (rc=$?): ${*:1:8} ..."; FAILED=1; }; }

# ---------------------------------------------------------------- 2. data (deterministic, cached)
gen() {  # name studies slices [extra gen_ct args]
    local name="$1" studies="$2" slices="$3"; shift 3
    local out
    out="$("$PY" "$HARNESS/gen_ct.py" --out "$DATA/$name" --name "$name" --studies "$studies" \
        --series-per-study 1 --slices "$slices" "$@")" || die "gen_ct.py failed for $name"
    log "data $name: $out"
}
STORE_SHAPE="${STORE_STUDIES}x${STORE_SLICES}"
STORE_DIRS=() PAR_DIRS=()
for ((i = 0; i < STORE_REPS; i++)); do
    # the same name and parameters run_suite.py uses, so it finds them up to date
    gen "store_a_dcmtk_${STORE_SHAPE}_r$i" "$STORE_STUDIES" "$STORE_SLICES" --seed 1
    STORE_DIRS+=("$DATA/store_a_dcmtk_${STORE_SHAPE}_r$i")
done
for ((i = 0; i < PAR_REPS; i++)); do
    gen "par_a_${STORE_SHAPE}_r$i" "$STORE_STUDIES" "$STORE_SLICES" --seed 1
    PAR_DIRS+=(--dir "$DATA/par_a_${STORE_SHAPE}_r$i")
done
FIND_PREFIX="VXFIND${FIND_STUDIES}_"
FIND_NAME="vxfind_${FIND_STUDIES}x${FIND_SLICES}_${FIND_ROWS}"
gen "$FIND_NAME" "$FIND_STUDIES" "$FIND_SLICES" --rows "$FIND_ROWS" --cols "$FIND_ROWS" --patient-prefix "$FIND_PREFIX"
FIND_DIR="$DATA/$FIND_NAME"

# ---------------------------------------------------------------- environment record
"$PY" - "$RESULTS" "$VOXA_PY" "$VOXA_CONF" "$REPO" <<EOF
import json, os, platform, subprocess, sys, datetime
results, voxa_py, voxa_conf, repo = sys.argv[1:5]
def sh(c, cwd=None):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, cwd=cwd).stdout.strip()
    except Exception: return None
import pydicom, pynetdicom, numpy, httpx
vx = sh(voxa_py + ''' -c "import sys, importlib.metadata as m, voxa, pydicom, pynetdicom, sqlalchemy; print(m.version('voxa'), sys.version.split()[0], pydicom.__version__, pynetdicom.__version__, sqlalchemy.__version__)"''') or ""
vx = (vx.split() + [None] * 5)[:5]
rec = {"test": "environment", "label": "_env", "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
       "results": {
         "orthanc": sh("dpkg-query -W -f='\${Version}' orthanc"),
         "orthanc_dicomweb": sh("dpkg-query -W -f='\${Version}' orthanc-dicomweb"),
         "dcmtk": sh("dpkg-query -W -f='\${Version}' dcmtk"),
         "python": platform.python_version(), "pydicom": pydicom.__version__,
         "pynetdicom": pynetdicom.__version__, "numpy": numpy.__version__, "httpx": httpx.__version__,
         "os": sh(". /etc/os-release; echo \$PRETTY_NAME"), "debian_version": sh("cat /etc/debian_version"),
         "kernel": platform.release(),
         "cpu": (sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2") or "").strip() or None,
         "cores": os.cpu_count(), "mem_gb": round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1),
         "voxa": vx[0], "voxa_python": vx[1], "voxa_pydicom": vx[2], "voxa_pynetdicom": vx[3], "voxa_sqlalchemy": vx[4],
         "voxa_git_commit": sh("git rev-parse --short HEAD", cwd=repo),
         "voxa_git_commit_subject": sh("git log -1 --format=%s", cwd=repo),
         "voxa_git_dirty_files": (sh("git diff --name-only HEAD", cwd=repo) or "").splitlines()[:30],
         "loadavg_at_start": os.getloadavg()[0],
         "params": {"quick": "$QUICK", "store": "$STORE_REPS x $STORE_SHAPE", "parallel": "$PAR_REPS x $STORE_SHAPE",
                    "find_set": "$FIND_STUDIES x 1 x $FIND_SLICES of ${FIND_ROWS}x${FIND_ROWS}", "find_reps": $FIND_REPS,
                    "echo_reps": $ECHO_REPS, "targets": "$TARGETS", "voxa_toml_extra": """${VOXA_TOML_EXTRA:-}"""}}}
open(results, "a").write(json.dumps(rec) + "\n")
EOF

LOAD1="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$LOAD1" 'BEGIN{exit !(l > 0.7)}'; then
    log "WARNING: load average is $LOAD1 before starting - other processes will skew the numbers"
fi

# ---------------------------------------------------------------- 3. servers
for t in $TARGETS; do
    case "$t" in
        orthanc) start_orthanc ;;
        voxa) start_voxa ;;
        *) die "unknown target $t" ;;
    esac
done
if [[ " $TARGETS " == *" voxa "* ]]; then
    FSYNC="$("$VOXA_PY" -c "from voxa.config import Settings; print(Settings.load('$VOXA_CONF').fsync)" 2>/dev/null || echo '?')"
    log "voxa effective fsync setting: $FSYNC"
    "$PY" - "$RESULTS" "$FSYNC" <<'EOF'
import json, sys
open(sys.argv[1], "a").write(json.dumps({"test": "voxa_settings", "label": "_voxa", "results": {"fsync": sys.argv[2]}}) + "\n")
EOF
fi

# ---------------------------------------------------------------- 4. phases, each target in turn
suite() {  # target, run_suite.py args...
    local t="$1"; shift
    # shellcheck disable=SC2046
    try "$PY" "$HARNESS/run_suite.py" $(target_args "$t") --work "$BENCH_WORK" --data "$DATA" \
        --server-pid "$(server_pid "$t")" --results "$RESULTS" --no-summary "$@"
}
step() {  # target, step name, script, script args...
    local t="$1" name="$2" script="$3"; shift 3
    # shellcheck disable=SC2046
    try "$PY" "$HERE/run_step.py" --harness "$HARNESS" --step "$name" --label "$t" --results "$RESULTS" \
        --server-pid "$(server_pid "$t")" -- "$script" $(target_args "$t") "$@"
}

log "phase echo"
for t in $TARGETS; do suite "$t" --steps echo --echo-reps "$ECHO_REPS"; done
settle
log "phase store (a): storescu, one association, $STORE_REPS x $STORE_SHAPE"
for t in $TARGETS; do
    suite "$t" --steps store --store-tools dcmtk --store-set a --store-reps "$STORE_REPS" \
        --store-studies "$STORE_STUDIES" --store-slices "$STORE_SLICES"
    settle
done
log "phase store (b): $STORE_STUDIES parallel storescu associations, $PAR_REPS x $STORE_SHAPE"
for t in $TARGETS; do
    step "$t" store_parallel bench_store_parallel.py "${PAR_DIRS[@]}"
    settle
done
log "phase load: C-FIND set, $FIND_STUDIES studies x $FIND_SLICES slices (storescu, one association)"
for t in $TARGETS; do
    step "$t" load bench_store.py --tool dcmtk --dir "$FIND_DIR" --test-name load_find_set
    settle
done
log "phase find: study-level C-FIND, $FIND_REPS reps per query"
for t in $TARGETS; do
    step "$t" find bench_find.py --reps "$FIND_REPS" --expect "$FIND_STUDIES" --patient-prefix "$FIND_PREFIX"
done

# ---------------------------------------------------------------- 5. stop, summarize
stop_voxa
stop_orthanc
SUMMARY="${RESULTS%.jsonl}.summary.md"
LABELS="$(echo $TARGETS | tr ' ' ',')"
{
    echo "# Voxa vs Orthanc, $(date -u +%Y-%m-%dT%H:%MZ)$QNOTE"
    echo
    echo "## Harness summary (summarize.py)"
    echo
    "$PY" "$HARNESS/summarize.py" "$RESULTS" --labels "$LABELS" | grep -vE '^\| (QIDO-RS|WADO-RS|Rendered) ' \
        | grep -vE 'pynetdicom (instances/s|MB/s|reps x)|pynetdicom store step|per instance, pynetdicom|QIDO\+WADO|metadata step|rendered step'
    echo
    echo "(QIDO-RS, WADO-RS, rendered and pynetdicom-store rows are not measured here and left out.)"
    echo
    if [[ "$LABELS" == *orthanc* && "$LABELS" == *voxa* ]]; then
        echo "## Voxa vs Orthanc (ratio_table.py)"
        echo
        "$PY" "$HERE/ratio_table.py" "$RESULTS" --base orthanc --new voxa
    fi
} | tee "$SUMMARY"
log "results: $RESULTS"
log "summary: $SUMMARY"
log "total runtime $(( $(date +%s) - T_START )) s"
if [[ "$FAILED" != 0 ]]; then
    log "some benchmark steps reported failures (see above and the 'errors' rows)"
    exit 1
fi
