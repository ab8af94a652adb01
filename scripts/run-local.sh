#!/usr/bin/env bash
# Installs what is missing, then runs a local Drover cluster (3 master replicas, 2 agents, Podman)
# and a demo job in containers. Ctrl-C stops everything. Extra arguments go to `drover local`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
. "$ROOT/scripts/env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/drover" local --demo "$@"
