#!/usr/bin/env python3
"""heat_segment.py REQUEST.nml -- the wrapper that runs the legacy code `heat` (heat.F90) as one
TAMS segment (file protocol v1, docs/protocol.md; the pattern: docs/wrapping.md).

`heat` cannot read our files, so the wrapper, run in the segment directory:
1. reads the request (request.json beside request.nml: the same values, easier to read);
2. translates it into the model's own namelist, heat.nml (one TAMS step = one model day =
   `substeps` model steps);
3. links the boundary file forcing.dat, the start state as restart.in, and the noise file as
   the model's daily perturbation file;
4. runs the model and turns its legacy `stop` (exit status 0 on error) into a failure;
5. extracts the observables from heat_daily.txt into the trace (step, time, ta, ts);
6. names the checkpoints: rst_<model step>.dat -> ckpt_<TAMS step>.bin.
Standard library only: it runs wherever python3 does.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.environ.get("HEAT_EXE", os.path.join(HERE, "bin", "heat"))
FORCING = os.environ.get("HEAT_FORCING", os.path.join(HERE, "bin", "forcing.dat"))
PHYSICS = ("lambda_a", "lambda_s", "gamma", "alpha", "perturb_amp")


def fail(message):
    print(f"heat_segment: {message}", file=sys.stderr)
    sys.exit(1)


def main(request_nml):
    os.chdir(os.path.dirname(os.path.abspath(request_nml)))
    with open("request.json") as f:
        req = json.load(f)
    seg, par = req["segment"], req["parameters"]
    sub = int(par.get("substeps", 24))
    step0, n = seg["step0"], seg["n_steps"]

    # 2. the model's own namelist: n TAMS steps are n * sub model steps
    nml = {"substeps": sub, "nsteps": n * sub, "restart_every": seg["checkpoint_every"] * sub,
           "perturb_file": "'perturb.dat'" if seg["noise_mode"] == "file" else "''"}
    nml.update({k: repr(float(par[k])) for k in PHYSICS if k in par})
    with open("heat.nml", "w") as f:
        f.write("&params\n" + "".join(f"  {k} = {v}\n" for k, v in nml.items()) + "/\n")

    # 3. boundary file, start state and noise, under the names the model opens
    os.symlink(FORCING, "forcing.dat")
    if seg["state_in"]:
        os.symlink(seg["state_in"], "restart.in")
    if seg["noise_mode"] == "file":
        os.symlink(seg["noise_file"], "perturb.dat")  # n_steps x 1 float64: one per day

    # 4. run; a legacy `stop 'message'` exits 0, so success is the model's own last word
    run = subprocess.run([MODEL], capture_output=True, text=True)
    sys.stderr.write(run.stderr)
    if run.returncode != 0 or "HEAT: normal end" not in run.stdout:
        fail(f"the model did not end normally (exit status {run.returncode}): "
             f"{(run.stderr or run.stdout).strip()[-300:]}")

    # 5. observables: heat_daily.txt has one line per model day: day, ta, ts
    with open("heat_daily.txt") as f:
        days = [line.split() for line in f if line.strip()]
    if len(days) != n:
        fail(f"heat_daily.txt has {len(days)} day(s), expected {n}")
    with open(seg["trace_file"], "w") as tr:
        for i, (day, ta, ts) in enumerate(days, start=1):
            step = step0 + i
            if int(day) != step:
                fail(f"heat_daily.txt line {i} is day {day}, expected {step}")
            tr.write(f"{step} {step * seg['dt']!r} {ta} {ts}\n")

    # 6. checkpoints: the model's rst_<model step>.dat under the protocol's names
    for name in sorted(os.listdir(".")):
        if name.startswith("rst_") and name.endswith(".dat"):
            step = int(name[4:-4]) // sub
            digits = seg["checkpoint_digits"]
            os.replace(name, f"{seg['checkpoint_prefix']}{step:0{digits}d}"
                             f"{seg['checkpoint_suffix']}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: heat_segment.py REQUEST.nml")
    main(sys.argv[1])
