#!/usr/bin/env bash
# setup.sh - install what Voxa needs to run and to be tested, on Debian 12.
#
#   bash scripts/setup.sh          (from any directory)
#
# 1. System packages (apt): Python >= 3.11 with venv and headers, a C toolchain,
#    DCMTK, Orthanc + DICOMweb plugin, PostgreSQL, Redis, dicom3tools, Chromium,
#    Node.js/npm and a few tools. apt runs only when something is missing.
#    Installing orthanc/postgresql/redis-server would normally start their
#    system services (Orthanc on 8042/4242, Voxa's own default ports); a
#    temporary /usr/sbin/policy-rc.d prevents that. The system Orthanc service
#    is always stopped (by its recorded PID) and disabled.
# 2. A virtual environment in <repo>/.venv with `pip install -e '.[test]'`.
#    pip runs only when pyproject.toml (or the interpreter) changed since the
#    last successful install.
# 3. The prebuilt OHIF viewer (@ohif/app, pinned) in third_party/ohif/dist, through
#    scripts/install_ohif.sh (npm pack from the npm registry; skipped when installed).
#
# Idempotent: a second run is a quick no-op.
#
# Environment knobs:
#   VOXA_PYTHON=/path/to/python3   interpreter for the venv (default: first of
#                                  python3, python3.13, python3.12, python3.11,
#                                  /usr/bin/python3 that is >= 3.11 with venv)
#   VOXA_SKIP_APT=1                never touch system packages
#   VOXA_FORCE_PIP=1               reinstall the Python packages even if unchanged
#   VOXA_SKIP_OHIF=1               do not install the OHIF viewer
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

START_S=$SECONDS
VENV="$ROOT/.venv"
EXTRAS="test"
STAMP="$VENV/.voxa-setup.sha256"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; [[ $rc -ne 0 ]] && printf "[setup] FAILED (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' ERR

# --------------------------------------------------------------------------
# privileges
# --------------------------------------------------------------------------
SUDO=()
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
fi
as_root() {
    if [[ $EUID -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        die "need root for: $* (run as root, or install sudo)"
    fi
    "${SUDO[@]}" "$@"
}

# --------------------------------------------------------------------------
# 1. system packages
# --------------------------------------------------------------------------
# Packages checked with dpkg. nodejs/npm and chromium are checked by command
# instead: NodeSource's nodejs package provides npm and conflicts with
# Debian's npm package. The fonts let headless Chromium draw every language of
# the web application (Droid Sans Fallback: Chinese, Japanese; Lohit: Hindi).
APT_PACKAGES=(
    python3 python3-venv python3-dev build-essential git curl ca-certificates
    zip unzip dcmtk orthanc orthanc-dicomweb postgresql redis-server
    dicom3tools libgl1 fonts-liberation fonts-droid-fallback fonts-lohit-deva
)
# services whose packages must never start on install
SERVICE_PACKAGES=(orthanc postgresql redis-server)

missing_packages() {
    local -a missing=()
    local pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == ii* ]] || missing+=("$pkg")
    done
    if ! command -v node >/dev/null 2>&1; then
        missing+=(nodejs npm)
    elif ! command -v npm >/dev/null 2>&1; then
        missing+=(npm)
    fi
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
        missing+=(chromium)
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then printf '%s\n' "${missing[@]}"; fi
}

POLICY_RC=/usr/sbin/policy-rc.d
CREATED_POLICY=0
remove_policy_rc() {
    if [[ $CREATED_POLICY -eq 1 ]]; then
        as_root rm -f "$POLICY_RC" && log "removed temporary $POLICY_RC"
        CREATED_POLICY=0
    fi
}
trap remove_policy_rc EXIT

have_systemd() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; }

disable_service() {
    # disable start at boot (does not stop it); both systemd and sysvinit
    local svc="$1"
    if have_systemd; then
        if systemctl is-enabled --quiet "$svc" 2>/dev/null; then
            log "disabling system service $svc (systemd)"
            as_root systemctl disable --quiet "$svc" || log "warning: could not disable $svc"
        fi
    elif [[ -x "/etc/init.d/$svc" ]] && compgen -G "/etc/rc[2345].d/S*$svc" >/dev/null; then
        log "disabling system service $svc (sysvinit)"
        as_root update-rc.d "$svc" disable >/dev/null 2>&1 || log "warning: could not disable $svc"
    fi
}

stop_system_orthanc() {
    # The Debian orthanc service listens on 8042/4242, Voxa's default ports.
    [[ -x /usr/sbin/Orthanc ]] || return 0
    if have_systemd; then
        if systemctl is-active --quiet orthanc 2>/dev/null; then
            log "stopping the system orthanc service (it uses Voxa's ports 8042/4242)"
            as_root systemctl stop orthanc || log "warning: could not stop orthanc"
        fi
    else
        local pidfile=/run/orthanc.pid pid
        if [[ -r $pidfile ]]; then
            pid="$(cat "$pidfile" 2>/dev/null || true)"
            if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
               && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/usr/sbin/Orthanc.*/etc/orthanc'; then
                log "stopping the system orthanc service, pid $pid (it uses Voxa's ports 8042/4242)"
                as_root kill -TERM "$pid" || true
                for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
                if kill -0 "$pid" 2>/dev/null; then
                    log "orthanc pid $pid did not exit on TERM; sending KILL"
                    as_root kill -KILL "$pid" || true
                fi
                as_root rm -f "$pidfile"
            fi
        fi
    fi
    disable_service orthanc
}

install_system_packages() {
    if [[ "${VOXA_SKIP_APT:-0}" == "1" ]]; then
        log "VOXA_SKIP_APT=1: not checking system packages"
        return 0
    fi
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        log "warning: not a Debian/Ubuntu system (no apt-get); install the system packages yourself:"
        log "  ${APT_PACKAGES[*]} nodejs npm chromium"
        return 0
    fi
    local -a missing
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "system packages: all present"
    else
        log "system packages missing: ${missing[*]}"
        local -a newly_installed_services=()
        local svc
        for svc in "${SERVICE_PACKAGES[@]}"; do
            if [[ " ${missing[*]} " == *" $svc "* ]]; then
                newly_installed_services+=("$svc")
            fi
        done
        if [[ ! -e $POLICY_RC ]]; then
            log "creating temporary $POLICY_RC so that apt starts no services"
            printf '#!/bin/sh\n# temporary, created by voxa scripts/setup.sh\nexit 101\n' | as_root tee "$POLICY_RC" >/dev/null
            as_root chmod 755 "$POLICY_RC"
            CREATED_POLICY=1
        fi
        # --no-install-recommends: chromium's recommends alone would pull in systemd-sysv,
        # udev, avahi-daemon and CUPS tools; everything needed is listed explicitly.
        local -a apt_opts=(-y --no-install-recommends -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update \
            || die "apt-get update failed"
        log "apt-get install ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install "${missing[@]}" \
            || die "apt-get install failed (packages: ${missing[*]})"
        remove_policy_rc
        # services of packages we just installed stay off at boot, too
        for svc in "${newly_installed_services[@]}"; do
            disable_service "$svc"
        done
        mapfile -t missing < <(missing_packages)
        [[ ${#missing[@]} -eq 0 ]] || die "still missing after apt-get install: ${missing[*]}"
        log "system packages: installed"
    fi
    stop_system_orthanc
}

# --------------------------------------------------------------------------
# 2. Python interpreter and virtual environment
# --------------------------------------------------------------------------
py_ok() {
    "$1" - <<'EOF' >/dev/null 2>&1
import sys
assert sys.version_info >= (3, 11), sys.version
import venv, ensurepip, sqlite3, ssl, ctypes, zlib  # noqa: F401
EOF
}

choose_python() {
    local cand
    if [[ -n "${VOXA_PYTHON:-}" ]]; then
        py_ok "$VOXA_PYTHON" || die "VOXA_PYTHON=$VOXA_PYTHON is not a Python >= 3.11 with venv, ssl and sqlite3"
        echo "$VOXA_PYTHON"
        return 0
    fi
    for cand in python3 python3.13 python3.12 python3.11 /usr/bin/python3; do
        if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then
            command -v "$cand"
            return 0
        fi
    done
    die "no Python >= 3.11 with venv/ensurepip, ssl and sqlite3 found (apt-get install python3 python3-venv python3-dev)"
}

requirements_hash() {
    {
        cat "$ROOT/pyproject.toml"
        echo "extras=$EXTRAS root=$ROOT"
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

pip_run() {
    # pip in .venv; drops the noise about configured local find-links/index
    # folders that do not exist on this machine ("WARNING: Location 'file:...").
    local rc
    set +e
    "$VENV/bin/python" -m pip "$@" 2>&1 | grep -v "^WARNING: Location 'file:"
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}

setup_venv() {
    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
        log "existing .venv is broken or too old; recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        local py
        py="$(choose_python)"
        log "creating .venv with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
        "$py" -m venv "$VENV" || die "python -m venv failed with $py"
    fi

    local want have=""
    want="$(requirements_hash)"
    [[ -r "$STAMP" ]] && have="$(cat "$STAMP")"
    if [[ "${VOXA_FORCE_PIP:-0}" != "1" && "$want" == "$have" && -x "$VENV/bin/voxa" ]] \
       && "$VENV/bin/python" -c 'import voxa' >/dev/null 2>&1; then
        log "python packages: up to date (.venv, pyproject.toml unchanged)"
        return 0
    fi
    rm -f "$STAMP"
    log "upgrading pip in .venv"
    pip_run install --quiet --progress-bar off --upgrade pip || die "pip upgrade failed"
    log "pip install -e '.[$EXTRAS]' (a few minutes on a fresh machine)"
    pip_run install --progress-bar off --quiet -e ".[$EXTRAS]" \
        || die "pip install -e '.[$EXTRAS]' failed; see the pip output above"
    "$VENV/bin/python" -c 'import voxa' || die "voxa is not importable after pip install"
    echo "$want" >"$STAMP"
    log "python packages: installed"
}

install_ohif() {
    # the prebuilt OHIF viewer served at /ohif/ (third_party/ohif/dist, git-ignored); a no-op when installed
    if [[ "${VOXA_SKIP_OHIF:-0}" == "1" ]]; then
        log "VOXA_SKIP_OHIF=1: not installing the OHIF viewer"
        return 0
    fi
    bash "$ROOT/scripts/install_ohif.sh" || die "installing the OHIF viewer failed (scripts/install_ohif.sh; VOXA_SKIP_OHIF=1 skips it)"
}

install_system_packages
setup_venv
install_ohif
bash "$ROOT/scripts/build_frontend.sh" || die "building the web application failed (scripts/build_frontend.sh; VOXA_SKIP_FRONTEND=1 skips it)"
log "done in $((SECONDS - START_S)) s ($ROOT/.venv, $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'))"
