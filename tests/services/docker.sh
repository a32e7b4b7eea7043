#!/usr/bin/env bash
# Make a Docker engine available for the container tests, idempotently:
#   - install Debian's Docker engine package with apt-get if dockerd is absent (needs root);
#   - start dockerd in its own session (setsid), logging to $TAMS_DOCKERD_LOG
#     (default /tmp/tams-dockerd.log), unless `docker info` already answers;
#   - wait until `docker info` answers (at most $TAMS_DOCKER_WAIT seconds, default 60).
# No systemd is needed.  Images are built locally (`make -C containers images`); no image
# registry is contacted.
set -euo pipefail
log=${TAMS_DOCKERD_LOG:-/tmp/tams-dockerd.log}
wait_s=${TAMS_DOCKER_WAIT:-60}

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "docker.sh: dockerd is not installed; run this script as root to install it" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null  # as established on these machines
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "docker.sh: dockerd is not running; run this script as root to start it" >&2
    exit 1
  fi
  setsid dockerd >"$log" 2>&1 < /dev/null &
fi
for _ in $(seq "$((wait_s * 5))"); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.2
done
echo "docker.sh: the Docker engine did not answer within ${wait_s} s; see $log" >&2
exit 1
