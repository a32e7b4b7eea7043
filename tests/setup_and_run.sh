#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine and run it.
# As root it installs the system packages with apt-get; elsewhere it expects them present.
# With TAMS_CI=1 (set by .ci/run) a test that would skip for want of a service fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gfortran >/dev/null || need+=(gfortran)
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v ps >/dev/null || need+=(procps)  # ps, pgrep: the service scripts and tests
[ -f /usr/include/netcdf.mod ] || need+=(libnetcdff-dev)  # SPEEDY (tests/test_speedy.py)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi

# a real single-node Slurm cluster for tests/test_slurm.py (needs root; skipped elsewhere)
if [ "$(id -u)" = 0 ]; then
  bash tests/services/slurm.sh
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
make -s -C containers all
# container tests: a Docker engine (installed and started as root) and the local images
if [ "$(id -u)" = 0 ]; then
  bash tests/services/docker.sh
fi
# a real Apptainer for the apptainer launcher's tests: an HPC machine has its own on PATH;
# otherwise (as root) the build shipped beside the repository (../shared/tools/apptainer)
if ! command -v apptainer >/dev/null && [ "$(id -u)" = 0 ] && [ -f ../shared/tools/apptainer/install.sh ]; then
  bash ../shared/tools/apptainer/install.sh
fi
if docker info >/dev/null 2>&1; then
  make -s -C containers images
fi

# lint and type-check first (configured in pyproject.toml): either failing stops the script
.venv/bin/ruff check .
.venv/bin/mypy

exec .venv/bin/python -m pytest -q --durations=40 "$@"
