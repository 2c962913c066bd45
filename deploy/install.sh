#!/usr/bin/env bash
# Install (or upgrade) community-gateway as a systemd service on Raspberry Pi OS /
# Debian 12 (arm64 or amd64). Run as root from a clone of the repository:
#
#   sudo bash deploy/install.sh            install or upgrade; does not start anything
#   sudo bash deploy/install.sh --start    ... and enable + (re)start the service
#   sudo bash deploy/install.sh --hub      the hub instead (docs/hub.md): user
#                                          community-gateway-hub, /etc/community-gateway-hub/hub.yaml,
#                                          community-gateway-hub.service; the same venv
#
# What it does, each step skipped when already done:
#   - Debian packages: python3-venv (and python3-pip's ensurepip);
#   - system user `community-gateway` (no login, no home) in group dialout;
#   - a virtual environment under /opt/community-gateway/venv with the gateway in it;
#   - /etc/community-gateway/site.yaml (from configs/building-gateway.yaml) and a
#     secrets.env, both kept if present; the unit in /etc/systemd/system.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/community-gateway
VENV=$PREFIX/venv
CONF=/etc/community-gateway
UNIT=/etc/systemd/system/community-gateway.service
SERVICE_USER=community-gateway
SERVICE=community-gateway
CONFIG_FILE=site.yaml
EXAMPLE=configs/building-gateway.yaml
START=no
HUB=no
for arg in "$@"; do
    case "$arg" in
        --start) START=yes ;;
        --hub) HUB=yes ;;
        *) printf 'usage: install.sh [--hub] [--start]\n' >&2; exit 2 ;;
    esac
done
if [ "$HUB" = yes ]; then
    # The hub: its own user (no serial ports), config and state; the same program.
    SERVICE_USER=community-gateway-hub
    SERVICE=community-gateway-hub
    CONF=/etc/community-gateway-hub
    UNIT=/etc/systemd/system/community-gateway-hub.service
    CONFIG_FILE=hub.yaml
    EXAMPLE=configs/hub/subdistrict-hub.yaml
fi

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo bash deploy/install.sh)"
command -v systemctl >/dev/null || die "systemd is needed"

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    step "installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"

if [ "$HUB" = yes ]; then
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        step "creating system user $SERVICE_USER"
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/community-gateway-hub --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
elif ! getent passwd "$SERVICE_USER" >/dev/null; then
    step "creating system user $SERVICE_USER (group dialout for serial ports)"
    useradd --system --user-group --groups dialout --no-create-home \
        --home-dir /var/lib/community-gateway --shell /usr/sbin/nologin "$SERVICE_USER"
else
    usermod -a -G dialout "$SERVICE_USER"
fi

step "installing the gateway into $VENV"
install -d -m 0755 "$PREFIX"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$SRC"

step "config in $CONF (kept if present)"
install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF"
if [ ! -e "$CONF/$CONFIG_FILE" ]; then
    install -m 0640 -o root -g "$SERVICE_USER" "$SRC/$EXAMPLE" "$CONF/$CONFIG_FILE"
    NEW_CONFIG=yes
fi
if [ ! -e "$CONF/secrets.env" ] && [ "$HUB" = yes ]; then
    umask 077
    cat >"$CONF/secrets.env" <<'TXT'
# Secrets for the community hub, as NAME=value lines; root only (mode 0600).
# The hub file names them: password: {env: HUB_MQTT_PASSWORD}. Never put them in hub.yaml.
#HUB_MQTT_PASSWORD=
#HUB_WEBHOOK_TOKEN=
#HUB_API_TOKEN=
#HUB_COMMAND_KEY=
TXT
    chmod 0600 "$CONF/secrets.env"
elif [ ! -e "$CONF/secrets.env" ]; then
    umask 077
    cat >"$CONF/secrets.env" <<'TXT'
# Secrets for community-gateway, as NAME=value lines; root only (mode 0600).
# The site config names them: token: {env: INFLUX_TOKEN}. Never put them in site.yaml.
#INFLUX_TOKEN=
#MQTT_PASSWORD=
#GATEWAY_API_TOKEN=
#HUB_COMMAND_KEY=
TXT
    chmod 0600 "$CONF/secrets.env"
fi

step "systemd unit $UNIT"
if [ "$HUB" = yes ]; then
    install -m 0644 "$SRC/deploy/community-gateway-hub.service" "$UNIT"
else
    install -m 0644 "$SRC/deploy/community-gateway.service" "$UNIT"
fi
systemd-analyze verify "$UNIT"
systemctl daemon-reload

step "checking $CONF/$CONFIG_FILE"
set -a
# shellcheck disable=SC1091
. "$CONF/secrets.env"
set +a
runuser -u "$SERVICE_USER" -- "$VENV/bin/community-gateway" check "$CONF/$CONFIG_FILE" || true

if [ "$START" = yes ]; then
    step "enabling and (re)starting $SERVICE"
    systemctl enable "$SERVICE"
    systemctl restart "$SERVICE"
    systemctl --no-pager status "$SERVICE" || true
else
    cat <<TXT

Installed. Next:
  1. edit $CONF/$CONFIG_FILE${NEW_CONFIG:+ (a copy of $EXAMPLE)} and $CONF/secrets.env
  2. check it:  sudo -u $SERVICE_USER $VENV/bin/community-gateway check $CONF/$CONFIG_FILE
  3. start it:  sudo systemctl enable --now $SERVICE
  4. watch it:  journalctl -u $SERVICE -f
TXT
fi
