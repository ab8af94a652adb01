#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite (unit, property and integration tests with
# real master processes, agents, Podman containers and pymesos clients). Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
. "$ROOT/scripts/env.sh"
cd "$ROOT"
# pytest exits 5 when it collected no test: that is a failure here, like any other non-zero status.
exec "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
