# shellcheck shell=bash
# Sourced (". scripts/env.sh") by every script that runs podman: exports CONTAINERS_CONF (and DROVER_ROOT).
#
# deploy/containers.conf sets default_ulimits nofile=16384 / nproc=32768. Podman applies them to every container,
# and without CAP_SYS_RESOURCE that fails with EPERM when they exceed the caller's hard limits. On such a machine we
# write a copy with the values lowered to the hard limits into var/containers.conf and export that one instead.
DROVER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DROVER_ROOT
_drover_conf="$DROVER_ROOT/deploy/containers.conf"
_drover_sed=()
_drover_n=$(ulimit -Hn)
if [ "$_drover_n" != "unlimited" ] && [ "$_drover_n" -lt 16384 ]; then
  _drover_sed+=(-e "s/nofile=16384:16384/nofile=${_drover_n}:${_drover_n}/")
fi
_drover_n=$(ulimit -Hu)
if [ "$_drover_n" != "unlimited" ] && [ "$_drover_n" -lt 32768 ]; then
  _drover_sed+=(-e "s/nproc=32768:32768/nproc=${_drover_n}:${_drover_n}/")
fi
if [ "${#_drover_sed[@]}" -gt 0 ]; then
  mkdir -p "$DROVER_ROOT/var"
  # write + rename so concurrent sourcing never sees a half-written file
  sed "${_drover_sed[@]}" "$_drover_conf" > "$DROVER_ROOT/var/containers.conf.$$"
  mv -f "$DROVER_ROOT/var/containers.conf.$$" "$DROVER_ROOT/var/containers.conf"
  _drover_conf="$DROVER_ROOT/var/containers.conf"
fi
export CONTAINERS_CONF="$_drover_conf"
unset _drover_conf _drover_sed _drover_n
