#!/usr/bin/env bash
# One-shot, idempotent setup of a Drover node (Debian 12, run as root):
#   apt packages -> <repo>/.venv (pip install -e .[test]) -> pymesos 0.3.15 -> default task image -> smoke test.
# Each step is skipped when already done, so a re-run takes ~1 s.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
T0=$(date +%s.%N)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
say() { echo "setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "must run as root (podman runs rootful: global store, cgroupfs)"; exit 1
fi

# --- 1. system packages --------------------------------------------------------------------------------------------
# catatonit and netavark are referenced by deploy/containers.conf (init_path, network_backend) but are only
# Recommends of podman, so they are listed explicitly. docker-registry (a distribution v2 registry,
# /usr/bin/docker-registry) is only for the tests of image pulls (tests/conftest_registry.py starts one on loopback);
# its systemd unit is not needed and is not started here. prometheus (/usr/bin/prometheus and promtool) is only for
# tests/test_prometheus_live.py, which checks deploy/prometheus/ and starts its own prometheus on loopback; the
# package's systemd service is not used either. chromium is for the web UI's browser test (tests/test_ui_browser.py
# drives Debian's Chromium with Playwright; no browser is downloaded).
PKGS=(podman runc conmon catatonit netavark busybox-static uidmap iptables
      python3 python3-venv python3-dev gcc ca-certificates docker-registry prometheus chromium)
missing=()
for p in "${PKGS[@]}"; do
  # `dpkg -s` also succeeds for removed-but-not-purged packages: require the "installed" status
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q "${PKGS[@]}"
fi

# --- 2. podman configuration ---------------------------------------------------------------------------------------
# shellcheck source=env.sh
. "$ROOT/scripts/env.sh"   # exports CONTAINERS_CONF (deploy/containers.conf, or var/ copy with lowered ulimits)

# --- 3. venv + project ---------------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  PY=$(command -v python3) || { say "python3 not found on PATH"; exit 1; }
  if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    say "$PY is $("$PY" --version 2>&1); Drover needs Python >= 3.11"; exit 1
  fi
  say "creating $VENV with $PY ($("$PY" --version 2>&1))"
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV"; then
    say "'$PY -m venv' failed. With Debian's /usr/bin/python3 this means python3-venv (ensurepip) is missing:"
    say "  apt-get install python3-venv. With another python3 first on PATH (pyenv, conda), make sure it was"
    say "  built with ensurepip, or put /usr/bin first: PATH=/usr/bin:\$PATH $0"
    exit 1
  fi
fi
# Re-run `pip install -e` only when pyproject.toml changed (it takes seconds even with nothing to do).
STAMP="$VENV/.drover-setup-stamp"
WANT=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! "$VENV/bin/python" -c 'import podman, prometheus_client, pytest, playwright, agent' 2>/dev/null; then
  say "pip install -e '$ROOT[test]'"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
  echo "$WANT" > "$STAMP"
fi

# --- 4. pymesos (needs a patched http-parser on Python 3.11) -------------------------------------------------------
if ! "$VENV/bin/python" -c 'import pymesos' 2>/dev/null; then
  say "installing pymesos 0.3.15"
  "$ROOT/scripts/install-pymesos.sh" "$VENV" >&2
fi

# --- 5. default task image + smoke test ----------------------------------------------------------------------------
IMAGE_ID=$(cd "$ROOT" && "$VENV/bin/python" -m agent.images)
IMAGE=$(cd "$ROOT" && "$VENV/bin/python" -c 'from agent.images import DEFAULT_IMAGE; print(DEFAULT_IMAGE)')
# Proves runc, ulimits and the cgroup setup work with our containers.conf (the usual failure: setrlimit EPERM).
if ! OUT=$(podman run --rm --network none "$IMAGE" echo ok 2>&1) || [ "$OUT" != ok ]; then
  say "smoke test 'podman run --rm $IMAGE echo ok' failed (CONTAINERS_CONF=$CONTAINERS_CONF):"
  echo "$OUT" >&2; exit 1
fi

echo "drover setup ok: $(podman --version | cut -d' ' -f3) podman, venv $VENV ($("$VENV/bin/python" --version 2>&1)," \
     "pymesos $("$VENV/bin/python" -c 'import pymesos; print(pymesos.__VERSION__)')), image $IMAGE ${IMAGE_ID:0:12}," \
     "CONTAINERS_CONF=$CONTAINERS_CONF, $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $T0}") s"
