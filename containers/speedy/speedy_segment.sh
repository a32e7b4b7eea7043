#!/usr/bin/env bash
# TAMS file-protocol wrapper for SPEEDY (docs/protocol.md, docs/speedy.md): run by the
# orchestrator in a fresh segment directory as `speedy_segment.sh request.nml`.
#   1. translate request.nml (&segment, &parameters) into SPEEDY's own namelist.nml;
#   2. link the boundary files SPEEDY opens by relative name;
#   3. run the patched model (one TAMS step = one model day);
#   4. turn SPEEDY's error `stop`s (exit status 0) into a non-zero exit;
#   5. write the trace (step time t_box t_global) and give the checkpoints their names.
# SPEEDY_BIN and SPEEDY_DATA override where the binary and the boundary files are.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${SPEEDY_BIN:-$here/bin/speedy}
data=${SPEEDY_DATA:-$here/bin/data}
req=${1:-request.nml}
die() { echo "speedy_segment.sh: $*" >&2; exit 1; }
[ -f "$req" ] || die "no request file $req"
[ -x "$bin" ] || die "no SPEEDY binary at $bin (build it: bash containers/speedy/build.sh)"

# "  key = value," -> value (quotes and the trailing comma removed); keys are lower case
get() {
  awk -v k="$1" -v d="${2-__none__}" '
    { line = $0; sub(/^[ \t]+/, "", line) }
    tolower(substr(line, 1, length(k))) == k && substr(line, length(k) + 1) ~ /^[ \t]*=/ {
      v = substr(line, index(line, "=") + 1); sub(/^[ \t]+/, "", v); sub(/,[ \t]*$/, "", v)
      sub(/[ \t]+$/, "", v); if (v ~ /^'\''.*'\''$/) v = substr(v, 2, length(v) - 2)
      print v; found = 1; exit }
    END { if (!found) { if (d == "__none__") exit 1; print d } }' "$req" \
    || die "request.nml has no key $1"
}
[ "$(get protocol_version)" = 1 ] || die "protocol_version must be 1"
noise_mode=$(get noise_mode)
[ "$noise_mode" = file ] || die "SPEEDY supports noise_mode = 'file' only (got '$noise_mode')"
state_in=$(get state_in); step0=$(get step0); n_steps=$(get n_steps); dt=$(get dt)
every=$(get checkpoint_every); prefix=$(get checkpoint_prefix); digits=$(get checkpoint_digits)
suffix=$(get checkpoint_suffix); noise_file=$(get noise_file); noise_dim=$(get noise_dim)
trace=$(get trace_file)
# &parameters (all optional)
noise_amp=$(get noise_amp 2.0e-7)
lon_w=$(get box_lon_w -10.0); lon_e=$(get box_lon_e 30.0)
lat_s=$(get box_lat_s 40.0); lat_n=$(get box_lat_n 60.0)
if [ -n "$noise_file" ]; then
  want=$((8 * n_steps * noise_dim)); have=$(stat -c %s "$noise_file" 2>/dev/null || echo missing)
  [ "$have" = "$want" ] || die "noise file $noise_file has $have bytes, expected $want"
fi
[ -z "$state_in" ] || [ -s "$state_in" ] || die "state_in $state_in is missing or empty"

cat >namelist.nml <<NML
&params
nsteps_out = 1000000000
nstdia     = 1000000000
/
&date
start_datetime%year = 1982, start_datetime%month = 1, start_datetime%day = 1,
start_datetime%hour = 0, start_datetime%minute = 0,
end_datetime%year = 9999, end_datetime%month = 1, end_datetime%day = 1,
end_datetime%hour = 0, end_datetime%minute = 0
/
&tams
state_in = '$state_in', noise_file = '$noise_file', day0 = $step0, n_days = $n_steps,
checkpoint_every = $every, noise_dim = $noise_dim, noise_amp = $noise_amp,
box_lon_w = $lon_w, box_lon_e = $lon_e, box_lat_s = $lat_s, box_lat_n = $lat_n,
daily_file = 'daily.txt', restart_prefix = 'restart_', done_file = 'tams_done'
/
NML
for f in surface.nc sea_surface_temperature.nc sea_ice.nc land.nc snow.nc soil.nc; do
  [ -f "$data/$f" ] || die "boundary file $data/$f missing (SPEEDY_DATA=$data)"
  ln -sf "$data/$f" "$f"
done
rm -f tams_done
"$bin" >speedy.log 2>&1
rc=$?
if [ $rc != 0 ] || [ ! -f tams_done ]; then
  tail -5 speedy.log >&2
  die "SPEEDY stopped before the end (exit status $rc; SPEEDY's own 'stop' exits 0): see $(pwd)/speedy.log"
fi
awk -v dt="$dt" '{ printf "%d %.17g %s %s\n", $1, $1 * dt, $2, $3 }' daily.txt >"$trace" \
  || die "cannot write $trace"
for f in restart_*.bin; do
  [ -e "$f" ] || continue
  s=${f#restart_}; s=${s%.bin}
  mv "$f" "$(printf '%s%0*d%s' "$prefix" "$digits" "$s" "$suffix")" || die "cannot rename $f"
done
rm -f surface.nc sea_surface_temperature.nc sea_ice.nc land.nc snow.nc soil.nc
exit 0
