#!/usr/bin/env bash
# The demo command: bash scripts/demo.sh [demo args...]
#
# Creates .venv in the repository when absent, installs the project into it and
# runs `community-gateway demo` (simulated devices, embedded broker, no hardware).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
VENV="$REPO/.venv"

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

if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "python3 has no venv module; install python3-venv"
        step "installing Debian package: python3-venv"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3-venv >/dev/null
    fi
    step "creating virtual environment $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi

# Same stamp as scripts/test.sh: an install with the test extras also serves the demo.
stamp="$VENV/.community-gateway-installed"
hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
case "$(cat "$stamp" 2>/dev/null)" in
    "test $hash" | "run $hash")
        step "project already installed in .venv (pyproject.toml unchanged)" ;;
    *)
        step "installing the project into .venv (pip install -e .)"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e .
        printf 'run %s\n' "$hash" >"$stamp" ;;
esac

step "starting: community-gateway demo $*"
exec "$VENV/bin/community-gateway" demo "$@"
