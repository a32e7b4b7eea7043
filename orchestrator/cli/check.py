"""``tams check CAMPAIGN.yaml``: validate the YAML, find the model, run one short segment in a
temporary directory, validate its outputs and show what came out.

Writes nothing outside that temporary directory, which is removed afterwards — unless the
model failed in a segment directory that still exists: then the directory is what the user
needs to debug the model (its request, trace, stderr), so it is kept and the message says
where, instead of naming a directory that no longer exists."""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from orchestrator.config import load
from orchestrator.core import noise as nz
from orchestrator.core.segments import validate
from orchestrator.core.window import running_means
from orchestrator.errors import UserError
from orchestrator.model import ModelRunError, SegmentRequest
from orchestrator.runtime.driver import Driver


def _failure_message(path, exc: ModelRunError, tmp: str, kept: bool) -> str:
    """One sentence: the campaign file, the model's failure, where its evidence is (only if it
    exists: the python adapter fails before making its segment directory), and the fix."""
    # the adapters name the directory first; say it once, below, and only if it exists
    what = str(exc).removeprefix(f"segment {exc.workdir}: ")
    where = (f"; its segment directory is kept for inspection in {exc.workdir} (delete {tmp} "
             "when done)" if kept else "")
    return (f"{path}: the model failed its test segment ({what}){where}; fix the model and run "
            "`tams check` again.")


def check(path: str, n_steps: int = 100) -> int:
    loaded = load(path)
    print(f"{loaded.path}: the YAML is valid (adapter {loaded.model.adapter}, "
          f"{loaded.campaign.replicas} replica(s) of N = {loaded.campaign.tams.trajectories}, "
          f"{loaded.n_steps} steps per trajectory)")
    driver = Driver(loaded)
    model, scorer, _ = driver._prepare()
    s = driver.settings()
    n = min(n_steps, s.segment_steps, s.horizon)
    tmp = tempfile.mkdtemp(prefix="tams-check-")
    keep = False
    try:
        initial = model.initial_state(f"{tmp}/initial")
        key = nz.trajectory_key(s.seed, 0, 0)
        req = SegmentRequest(workdir=f"{tmp}/segment", start=initial, step0=0, n_steps=n,
                             dt=s.dt, checkpoint_every=s.checkpoint_every,
                             noise=nz.step_noise(key, 1, n, s.noise_dim) if s.noise_mode == "file" else None,
                             seed=nz.segment_seed(key, 0) if s.noise_mode == "seed" else None,
                             parameters=s.parameters, timeout=s.timeout)
        t0 = time.perf_counter()
        try:
            res = model.run_segment(req)
            validate(req, res, s.n_obs)
        except ModelRunError as exc:
            keep = bool(exc.workdir) and os.path.isdir(exc.workdir)
            raise UserError(_failure_message(loaded.path, exc, tmp, keep)) from None
        wall = time.perf_counter() - t0
        obs = res.observables
        if s.window > 1:  # score.window: running means from step 1, as the driver computes them
            obs = running_means(obs[:0], obs, s.window, 1)
        scores = scorer(res.steps * s.dt, obs)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"one segment of {n} steps ran in {wall * 1e3:.1f} ms ({wall / n * 1e6:.1f} µs per step), "
          f"{res.checkpoints.steps.size} checkpoint(s)")
    names = [o.name for o in loaded.model.observable_specs()]
    for i, name in enumerate(names):
        col = res.observables[:, i]
        print(f"  observable {name:>12}: first {col[0]:.6g}, last {col[-1]:.6g}, "
              f"range [{col.min():.6g}, {col.max():.6g}]")
    print(f"  score: range [{scores.min():.6g}, {scores.max():.6g}] (target {s.target})")
    print("check passed")
    return 0
