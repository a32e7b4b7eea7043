#!/usr/bin/env bash
# Build SPEEDY with the project's restart patch (tams_speedy.f90) into containers/speedy/bin/.
#
# The model's source is NOT part of this repository: it is taken from SPEEDY_SRC (a checkout
# of samhatfield/speedy.f90), by default ../shared/models/speedy.f90 beside the repository,
# and copied into containers/speedy/build/ (git-ignored) where the patch is applied.
# Needs gfortran and the NetCDF Fortran library (Debian: libnetcdff-dev; NETCDF=/usr).
# Result, in SPEEDY_OUT (default containers/speedy/bin/): speedy (the patched model), data/*.nc
# (its climatological boundary files), LICENSE.speedy and, with --spinup DAYS,
# summer_state.bin (DAYS model days from rest on 1 January; 151 days -> 00 UTC 1 June).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
src=${SPEEDY_SRC:-$repo/../shared/models/speedy.f90}
netcdf=${NETCDF:-/usr}
if [ ! -f "$src/source/speedy.f90" ] || [ ! -d "$src/data/bc/t30/clim" ]; then
  echo "build.sh: no SPEEDY source at $src (expected source/ and data/bc/t30/clim/);" \
       "set SPEEDY_SRC=/path/to/speedy.f90" >&2
  exit 2
fi
command -v gfortran >/dev/null || { echo "build.sh: gfortran not found (apt-get install gfortran)" >&2; exit 2; }
if [ ! -f "$netcdf/include/netcdf.mod" ]; then
  echo "build.sh: $netcdf/include/netcdf.mod not found: install the NetCDF Fortran library" \
       "(apt-get install libnetcdff-dev) or set NETCDF=<its prefix>" >&2
  exit 2
fi

# SPEEDY_OUT / SPEEDY_BUILD: other output and build directories (the tests build there)
out=${SPEEDY_OUT:-$here/bin}
build=${SPEEDY_BUILD:-$here/build}
rm -rf "$build"
mkdir -p "$build" "$out/data"
cp "$src"/source/*.f90 "$src/source/gfortran.makefile" "$build/"
cp "$src/LICENSE" "$out/LICENSE.speedy"
# the patch: our main program replaces upstream's; the land and sea modules become public so
# the restart file can hold their states; climatological SST (the anomaly file is not shipped)
cp "$here/tams_speedy.f90" "$build/speedy.f90"
sed -i '0,/^ *private *$/{/^ *private *$/d}' "$build/land_model.f90" "$build/sea_model.f90"
sed -i 's/^\( *integer :: sst_anomaly_coupling_flag *= *\)1/\10/' "$build/sea_model.f90"
grep -q 'sst_anomaly_coupling_flag *= *0' "$build/sea_model.f90" || {
  echo "build.sh: could not set sst_anomaly_coupling_flag = 0 in source/sea_model.f90" >&2; exit 2; }
# a build that does not depend on the machine: no -Ofast (-ffast-math reorders operations
# differently for different CPUs' vector widths), -O2 with no FMA contraction
sed -i 's/^OPT=.*/OPT=-O2 -ffp-contract=off/' "$build/gfortran.makefile"
(cd "$build" && make -s -f gfortran.makefile NETCDF="$netcdf" INC="-I$netcdf/include" \
   LIB="-L$netcdf/lib -lnetcdff -lnetcdf" >build.log 2>&1) || {
  tail -20 "$build/build.log" >&2; echo "build.sh: compilation failed (log: $build/build.log)" >&2; exit 1; }
cp "$build/speedy" "$out/speedy.new" && mv -f "$out/speedy.new" "$out/speedy"
cp "$src"/data/bc/t30/clim/*.nc "$out/data/"
echo "built $out/speedy from $src"

if [ "${1:-}" = "--spinup" ]; then
  days=${2:-151}
  run=$(mktemp -d)
  trap 'rm -rf "$run"' EXIT
  cat >"$run/request.nml" <<NML
&segment
  protocol_version = 1,
  state_in = '',
  step0 = 0,
  n_steps = $days,
  dt = 1.0,
  t0 = 0.0,
  checkpoint_every = $days,
  checkpoint_prefix = 'spinup_',
  checkpoint_digits = 4,
  checkpoint_suffix = '.bin',
  noise_mode = 'file',
  noise_file = '',
  noise_dim = 24,
  seed = 0,
  trace_file = 'trace.txt',
/
&parameters
/
NML
  (cd "$run" && SPEEDY_BIN="$out/speedy" SPEEDY_DATA="$out/data" "$here/speedy_segment.sh" request.nml)
  cp "$run/$(printf 'spinup_%04d.bin' "$days")" "$out/summer_state.bin"
  tail -1 "$run/trace.txt" | awk '{printf "spin-up: %d days from rest on 1 January; last day: box %.2f K, global %.2f K\n", $1, $3, $4}'
  echo "wrote $out/summer_state.bin"
fi
