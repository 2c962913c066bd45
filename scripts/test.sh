#!/usr/bin/env bash
# The test command: bash scripts/test.sh [pytest args...]
#
# On Debian 12 it installs what the integration tests need (mosquitto,
# victoria-metrics, python3-venv, systemd, openssl, chromium, a CJK font) when missing, creates .venv in the repository,
# installs the project with its test extras, and runs pytest. Tests start their
# own servers on free loopback ports; the system services are not used.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
VENV="$REPO/.venv"
# systemd: `systemd-analyze verify` checks the unit in deploy/ (works without systemd
# running as PID 1); openssl: the TLS tests make a throwaway CA with it.
# chromium: the console's browser tests drive Debian's Chromium through Playwright
# (Playwright's own browser download is never used).
# fonts-wqy-microhei: a CJK font (4 MB), so the console's Chinese page shows glyphs, not boxes.
# fuse3: the power-cut test keeps the state folder on a FUSE filesystem (tests/cutfs.py).
APT_PACKAGES=(mosquitto victoria-metrics python3-venv systemd openssl chromium fonts-wqy-microhei fuse3)

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

# 1. Debian packages
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get; install them by hand"
    step "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
else
    step "Debian packages present: ${APT_PACKAGES[*]}"
fi
# The packages' own services (mosquitto on 1883, victoria-metrics on 8428) may be
# running; that is harmless: tests start private servers on free ports and never
# connect to the default ones.
step "tests use their own mosquitto/victoria-metrics on free ports (system services untouched)"

# 2. virtual environment with the project and its test extras
if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
# Reinstall only when pyproject.toml changed: the editable install picks up new
# modules by itself.
stamp="$VENV/.community-gateway-installed"
want="test $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing the project and test dependencies into .venv (pip install -e '.[test]')"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$want" >"$stamp"
else
    step "project already installed in .venv (pyproject.toml unchanged)"
fi

# 3. the tests
step "running: python -m pytest $*"
rc=0
"$VENV/bin/python" -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    die "pytest collected no tests (exit code 5); counting that as a failure"
fi
exit "$rc"
