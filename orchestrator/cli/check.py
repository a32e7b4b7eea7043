"""``tams check CAMPAIGN.yaml``: validate the YAML, find the model, and prove on a short stretch
of steps that it can be used for TAMS: it runs, it is deterministic, and it restarts exactly.

Runs, all from the campaign's own first trajectory (its noise key), in a temporary directory:

- ``segment``: n steps from the initial state (the test segment; its output is shown);
- ``repeat``: the same request again — the same request must give the same bits;
- ``split``: the same n steps as two segments, 0..m and m..n, the second started from a copy of
  the first one's last checkpoint, alone in a fresh directory (``file`` noise: the same noise
  rows; ``seed`` noise: each segment has its own seed, so the second segment is run twice from
  the copy and the two runs are compared instead — a seed-mode model cannot be compared with an
  unsplit run, its noise changes at every restart);
- ``branch`` (``file`` noise, when the test segment wrote a checkpoint at m before its end): the
  steps m..n again from a copy of that mid-segment checkpoint — what a child does.

Traces (observables and, for the executable adapter, the time column) and checkpoints are
compared bit for bit; the first difference stops the check with one sentence (step,
observable, the usual causes).  Then the cost: seconds per step and per model start, bytes per
checkpoint, and with ``--guess-p P`` an estimate of the whole campaign (formulas in
docs/wrapping.md, "What a campaign will cost").

Writes nothing outside that temporary directory, which is removed afterwards — unless the
model failed in a segment directory that still exists: then the directory is what the user
needs to debug the model (its request, trace, stderr), so it is kept and the message says
where, instead of naming a directory that no longer exists."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from orchestrator.config import load
from orchestrator.core import noise as nz
from orchestrator.core.segments import validate
from orchestrator.core.window import running_means
from orchestrator.errors import UserError
from orchestrator.model import (
    ForwardModel,
    ModelRunError,
    SegmentRequest,
    SegmentResult,
    StateRef,
)
from orchestrator.runtime.driver import Driver

CAUSES = ("usually a state variable missing from the checkpoint (every prognostic field, every "
          "time level, every sub-model, the random state), a file besides the checkpoint that "
          "the model reads on restart (hidden files), or time accumulated from the segment's "
          "start instead of computed as step0 + i steps")
NONDETERMINISM = ("usually the model reads the clock or an uninitialised variable, seeds its "
                  "own random generator, or reads a file an earlier run left behind")


def _failure_message(path, exc: ModelRunError, tmp: str, kept: bool, which: str = "test") -> str:
    """One sentence: the campaign file, the model's failure, where its evidence is (only if it
    exists: the python adapter fails before making its segment directory), and the fix."""
    # the adapters name the directory first; say it once, below, and only if it exists
    what = str(exc).removeprefix(f"segment {exc.workdir}: ")
    where = (f"; its segment directory is kept for inspection in {exc.workdir} (delete {tmp} "
             "when done)" if kept else "")
    return (f"{path}: the model failed its {which} segment ({what}){where}; fix the model and "
            "run `tams check` again.")


@dataclass
class _Run:
    req: SegmentRequest
    res: SegmentResult
    wall: float
    times: np.ndarray | None  # the trace's time column (executable adapter), else None


class _Checker:
    def __init__(self, loaded, model, s, tmp: str):
        self.loaded, self.model, self.s, self.tmp = loaded, model, s, tmp
        self.key = nz.trajectory_key(s.seed, 0, 0)
        self.keep = False
        self.trace_file = getattr(loaded.model, "trace_file", None)

    def request(self, name: str, start: StateRef | None, step0: int, n: int,
                seed_step0: int | None = None) -> SegmentRequest:
        s = self.s
        file_mode = s.noise_mode == "file"
        return SegmentRequest(
            workdir=f"{self.tmp}/{name}", start=start, step0=step0, n_steps=n, dt=s.dt,
            checkpoint_every=s.checkpoint_every,
            noise=nz.step_noise(self.key, step0 + 1, n, s.noise_dim) if file_mode else None,
            seed=(nz.segment_seed(self.key, step0 if seed_step0 is None else seed_step0)
                  if not file_mode else None),
            parameters=s.parameters, timeout=s.timeout)

    def run(self, req: SegmentRequest, which: str) -> _Run:
        t0 = time.perf_counter()
        try:
            res = self.model.run_segment(req)
            validate(req, res, self.s.n_obs)
        except ModelRunError as exc:
            self.keep = bool(exc.workdir) and os.path.isdir(exc.workdir)
            raise UserError(_failure_message(self.loaded.path, exc, self.tmp, self.keep,
                                             which)) from None
        wall = time.perf_counter() - t0
        times = None
        if self.trace_file:
            try:
                times = np.loadtxt(os.path.join(req.workdir, self.trace_file), usecols=1,
                                   ndmin=1, dtype=np.float64)
            except (OSError, ValueError):
                times = None
        return _Run(req, res, wall, times)

    def copy_state(self, run: _Run, step: int, name: str) -> StateRef:
        """The checkpoint of ``step`` copied alone into a fresh directory: a restart that
        needs any other file of the segment directory fails or differs."""
        ck = run.res.checkpoints
        i = int(np.flatnonzero(ck.steps == step)[0])
        ref = ck.ref(i)
        d = f"{self.tmp}/{name}"
        os.makedirs(d)
        dst = os.path.join(d, os.path.basename(ref.path))
        shutil.copyfile(ref.path, dst)
        return StateRef(dst, ref.index)


def _state_bytes(ref: StateRef, model: ForwardModel) -> bytes:
    """The bytes of one state: as its adapter reads them, else the file, or its row when one
    .npy file holds many states."""
    own = model.state_bytes(ref)
    if own is not None:
        return own
    if ref.index < 0:
        with open(ref.path, "rb") as f:
            return f.read()
    if ref.path.endswith(".npy"):
        return np.load(ref.path, mmap_mode="r")[ref.index].tobytes()
    with open(ref.path, "rb") as f:  # an indexed file we cannot cut: compare it whole
        return f.read()


def _state_size(ref: StateRef, model: ForwardModel) -> int:
    if ref.index >= 0:
        return len(_state_bytes(ref, model))
    return os.path.getsize(ref.path)


def _fmt(v: float) -> str:
    return repr(float(v))


def _trace_diff(names: list[str], obs_a, obs_b, steps, times_a=None, times_b=None):
    """(step, what, value a, value b) of the first bitwise difference, or None."""
    bad = (np.ascontiguousarray(obs_a).view(np.int64)
           != np.ascontiguousarray(obs_b).view(np.int64))
    rows = np.flatnonzero(bad.any(axis=1))
    trow = None
    if times_a is not None and times_b is not None and times_a.shape == times_b.shape:
        t_bad = np.flatnonzero(times_a.view(np.int64) != times_b.view(np.int64))
        trow = int(t_bad[0]) if t_bad.size else None
    orow = int(rows[0]) if rows.size else None
    if orow is None and trow is None:
        return None
    if orow is not None and (trow is None or orow <= trow):
        j = int(np.flatnonzero(bad[orow])[0])
        return (int(steps[orow]), f"observable {names[j]}", obs_a[orow, j], obs_b[orow, j])
    assert trow is not None and times_a is not None and times_b is not None
    return (int(steps[trow]), "the time column of the trace", times_a[trow], times_b[trow])


def _ckpt_diff(a: SegmentResult, b: SegmentResult,
               model: ForwardModel) -> tuple[int, int, int] | None:
    """(step, first differing byte, size) of the first checkpoint both runs wrote that differs."""
    common = np.intersect1d(a.checkpoints.steps, b.checkpoints.steps)
    for step in common:
        ia = int(np.flatnonzero(a.checkpoints.steps == step)[0])
        ib = int(np.flatnonzero(b.checkpoints.steps == step)[0])
        x, y = (_state_bytes(a.checkpoints.ref(ia), model),
                _state_bytes(b.checkpoints.ref(ib), model))
        if x != y:
            n = min(len(x), len(y))
            off = next((i for i in range(n) if x[i] != y[i]), n)
            return int(step), off, max(len(x), len(y))
    return None


def _restart_sentence(path, diff, how: str) -> str:
    step, what, va, vb = diff
    return (f"{path}: the restart is not exact: {how} first differs at step {step}, in {what} "
            f"({_fmt(vb)} against {_fmt(va)}); {CAUSES}; fix the model's restart "
            "(docs/wrapping.md, the restart-patch checklist) and run `tams check` again.")


def _ckpt_sentence(path, cd, how: str) -> str:
    step, off, size = cd
    return (f"{path}: the restart is not exact: {how} gives the same trace but a different "
            f"checkpoint at step {step} (first differing byte {off} of {size}); usually the "
            "checkpoint holds a time stamp, its own path or uninitialised padding, or a state "
            "variable that is written but not read back on restart; fix the model's checkpoint "
            "(docs/wrapping.md) and run `tams check` again.")


def check(path: str, n_steps: int | None = None, guess_p: float | None = None) -> int:
    loaded = load(path)
    print(f"{loaded.path}: the YAML is valid (adapter {loaded.model.adapter}, "
          f"{loaded.campaign.replicas} replica(s) of N = {loaded.campaign.tams.trajectories}, "
          f"{loaded.n_steps} steps per trajectory)")
    if guess_p is not None and not 0.0 < guess_p < 1.0:
        raise UserError(f"{loaded.path}: --guess-p {guess_p!r} is not a probability in (0, 1); "
                        "give a guess such as --guess-p 1e-4.")
    if n_steps is not None and n_steps < 1:
        raise UserError(f"{loaded.path}: --steps {n_steps} must be at least 1.")
    driver = Driver(loaded)
    model, scorer, _ = driver._prepare()
    s = driver.settings()
    ce = s.checkpoint_every
    # default: enough steps for a checkpoint in the middle of the test segment, within reason
    n = min(s.horizon, n_steps if n_steps is not None else max(100, min(2 * ce, 1000)))
    m = ce * max(1, (n // 2) // ce) if ce < n else n // 2
    names = [o.name for o in loaded.model.observable_specs()]
    tmp = tempfile.mkdtemp(prefix="tams-check-")
    ck = _Checker(loaded, model, s, tmp)
    lines: list[str] = []
    try:
        initial = model.initial_state(f"{tmp}/initial")
        full = ck.run(ck.request("segment", initial, 0, n), "test")
        res = full.res
        obs = res.observables
        if s.window > 1:  # score.window: running means from step 1, as the driver computes them
            obs = running_means(obs[:0], obs, s.window, 1)
        scores = scorer(res.steps * s.dt, obs)
        lines.append(f"one segment of {n} steps ran in {full.wall * 1e3:.1f} ms "
                     f"({full.wall / n * 1e6:.1f} µs per step), "
                     f"{res.checkpoints.steps.size} checkpoint(s)")
        for i, name in enumerate(names):
            col = res.observables[:, i]
            lines.append(f"  observable {name:>12}: first {col[0]:.6g}, last {col[-1]:.6g}, "
                         f"range [{col.min():.6g}, {col.max():.6g}]")
        lines.append(f"  score: range [{scores.min():.6g}, {scores.max():.6g}] (target {s.target})")
        for ln in lines:
            print(ln)
        # 1. the same request twice
        again = ck.run(ck.request("repeat", initial, 0, n), "repeated")
        d = _trace_diff(names, res.observables, again.res.observables, res.steps,
                        full.times, again.times)
        if d is not None:
            raise UserError(
                f"{loaded.path}: the model is not deterministic: the same request run twice "
                f"first differs at step {d[0]}, in {d[1]} ({_fmt(d[3])} against {_fmt(d[2])}); "
                f"{NONDETERMINISM}; TAMS needs the same bits from the same request.")
        cd = _ckpt_diff(res, again.res, model)
        if cd is not None:
            raise UserError(
                f"{loaded.path}: the model is not deterministic: the same request run twice "
                f"wrote a different checkpoint at step {cd[0]} (first differing byte {cd[1]} of "
                f"{cd[2]}); usually a time stamp, the run's own path or uninitialised padding in "
                "the checkpoint; TAMS needs the same bits from the same request.")
        print(f"determinism: the same request twice gave the same bits ({n} steps, "
              f"{res.checkpoints.steps.size} checkpoint(s))")
        # 2. restart
        if n < 2:
            print("restart: not tested (the horizon is 1 step: nothing is ever restarted)")
        elif s.noise_mode == "file":
            first = ck.run(ck.request("split-1", initial, 0, m), "first split")
            start = ck.copy_state(first, m, "split-state")
            second = ck.run(ck.request("split-2", start, m, n - m), "restarted")
            how = (f"the run split at step {m} (a second segment restarted from the checkpoint "
                   f"of step {m}) against one segment of {n} steps")
            obs = np.concatenate([first.res.observables, second.res.observables])
            t_split = (np.concatenate([first.times, second.times])
                       if first.times is not None and second.times is not None else None)
            d = _trace_diff(names, res.observables, obs, res.steps, full.times, t_split)
            if d is not None:
                raise UserError(_restart_sentence(loaded.path, d, how))
            for part in (first, second):
                cd = _ckpt_diff(res, part.res, model)
                if cd is not None:
                    raise UserError(_ckpt_sentence(loaded.path, cd, how))
            tested = f"split at step {m}: traces and checkpoints equal the unsplit run's"
            if m in set(res.checkpoints.steps.tolist()[:-1]):
                start = ck.copy_state(full, m, "branch-state")
                branch = ck.run(ck.request("branch", start, m, n - m), "branched")
                how = (f"a segment restarted from the test segment's mid-segment checkpoint of "
                       f"step {m} (as a child branches)")
                d = _trace_diff(names, res.observables[m:], branch.res.observables,
                                res.steps[m:], None if full.times is None else full.times[m:],
                                branch.times)
                if d is not None:
                    raise UserError(_restart_sentence(loaded.path, d, how))
                cd = _ckpt_diff(res, branch.res, model)
                if cd is not None:
                    raise UserError(_ckpt_sentence(loaded.path, cd, how))
                tested += f"; restart from the mid-segment checkpoint of step {m}: equal"
            print(f"restart: exact ({tested}, bit for bit)")
        else:
            first = ck.run(ck.request("split-1", initial, 0, m), "first split")
            start = ck.copy_state(first, m, "split-state")
            second = ck.run(ck.request("split-2", start, m, n - m), "restarted")
            twice = ck.run(ck.request("split-2-again", start, m, n - m), "restarted")
            d = _trace_diff(names, second.res.observables, twice.res.observables,
                            second.res.steps, second.times, twice.times)
            if d is not None:
                raise UserError(
                    f"{loaded.path}: the restart is not deterministic: a segment restarted from "
                    f"the checkpoint of step {m} with the same seed, run twice, first differs at "
                    f"step {d[0]}, in {d[1]} ({_fmt(d[3])} against {_fmt(d[2])}); {CAUSES}; "
                    "fix the model's restart (docs/wrapping.md) and run `tams check` again.")
            cd = _ckpt_diff(second.res, twice.res, model)
            if cd is not None:
                raise UserError(_ckpt_sentence(loaded.path, cd, "a restarted segment run twice"))
            print(f"restart: deterministic (from the checkpoint of step {m}, the same seed twice "
                  "gave the same bits); seed noise changes at every restart, so continuity "
                  "with an unsplit run cannot be compared: check it once with `noise: file` if "
                  "the model can read a noise file (docs/wrapping.md)")
        one = ck.run(ck.request("one-step", initial, 0, 1), "1-step")
        _cost(loaded, model, s, full, again, one, guess_p)
    finally:
        if not ck.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("check passed")
    return 0


def total_workers(runner) -> int:
    """Segments the configured runner runs at once."""
    slurm = getattr(runner, "slurm", None)
    if runner.kind == "slurm" and slurm is not None:
        per_node = slurm.workers_per_node or runner.workers
        return max(1, slurm.max_blocks * slurm.nodes_per_block * per_node)
    return max(1, int(runner.workers))


@dataclass(frozen=True)
class CostEstimate:
    iterations: int
    trajectories: int
    segments: int
    model_steps: int
    wall: float
    disk_live: float
    disk_all: float


def estimate_cost(p: float, *, replicas: int, n: int, k: int, horizon: int, segment_steps: int,
                  checkpoint_every: int, workers: int, sec_per_step: float, sec_per_start: float,
                  bytes_per_checkpoint: float) -> CostEstimate:
    """The formulas of docs/wrapping.md ("What a campaign will cost"), upper bounds:

    J = ceil(ln p / ln(1 - k/N)) iterations per replica (each multiplies the weight by 1 - k/N);
    every trajectory is charged the whole horizon H (children branch part-way, so less);
    one trajectory takes tau = H c + ceil(H / L) o seconds (c per step, o per model start,
    L = min(segment_steps, H)); the R N initial trajectories run W at a time, then each of the
    J iterations runs the R k children of all replicas W at a time:
    wall = tau (ceil(R N / W) + J ceil(R k / W));
    checkpoints per trajectory C = ceil(H / checkpoint_every) + ceil(H / L);
    state disk: keep_states live about R N C checkpoints, keep_states all R (N + k J) C."""
    jj = max(0, math.ceil(math.log(p) / math.log(1.0 - k / n)))
    length = min(segment_steps, horizon)
    seg_per_traj = math.ceil(horizon / length)
    trajs = replicas * (n + k * jj)
    tau = horizon * sec_per_step + seg_per_traj * sec_per_start
    wall = tau * (math.ceil(replicas * n / workers) + jj * math.ceil(replicas * k / workers))
    cks = math.ceil(horizon / checkpoint_every) + seg_per_traj
    return CostEstimate(jj, trajs, trajs * seg_per_traj, trajs * horizon, wall,
                        replicas * n * cks * bytes_per_checkpoint,
                        trajs * cks * bytes_per_checkpoint)


def _human_bytes(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.3g} {unit}"
        b /= 1000
    return f"{b:.3g} TB"  # pragma: no cover


def _human_seconds(t: float) -> str:
    if t < 120:
        return f"{t:.3g} s"
    if t < 7200:
        return f"{t / 60:.3g} min"
    if t < 172800:
        return f"{t / 3600:.3g} h"
    return f"{t / 86400:.3g} days"


def _cost(loaded, model, s, full: _Run, again: _Run, start: _Run,
          guess_p: float | None) -> None:
    n = full.req.n_steps
    # a model start is what a 1-step segment costs; the rest of a segment is its steps
    start_cost = min(start.wall, full.wall, again.wall)
    per_step = max(min(full.wall, again.wall) - start_cost, 0.0) / max(1, n - 1)
    ck = full.res.checkpoints
    size = _state_size(ck.ref(ck.steps.size - 1), model)
    step_text = (f"{per_step:.3g} s per model step" if per_step > 0 else
                 "model steps too fast to measure next to a model start")
    print(f"cost: {step_text}, about {start_cost:.3g} s per model start, "
          f"{size} bytes per checkpoint ({_human_bytes(size)})")
    c = loaded.campaign
    workers = total_workers(c.runner)
    if guess_p is None:
        print("  (add --guess-p P, a guess of the probability, for the campaign's model steps, "
              "wall time and state disk)")
        return
    est = estimate_cost(guess_p, replicas=c.replicas, n=s.n, k=s.k, horizon=s.horizon,
                        segment_steps=s.segment_steps, checkpoint_every=s.checkpoint_every,
                        workers=workers, sec_per_step=per_step, sec_per_start=start_cost,
                        bytes_per_checkpoint=size)
    keep = c.database.keep_states
    disk = est.disk_live if keep == "live" else est.disk_all
    print(f"estimate for p = {guess_p:g} (model steps and disk are upper bounds, the wall time "
          f"assumes this check's speed; formulas in docs/wrapping.md): "
          f"{est.iterations} iterations per replica, {est.trajectories} trajectories, "
          f"{est.segments} segments, {est.model_steps:.3g} model steps; wall time "
          f"{_human_seconds(est.wall)} on {workers} worker(s); state disk "
          f"{_human_bytes(disk)} with keep_states: {keep} "
          f"({_human_bytes(est.disk_all if keep == 'live' else est.disk_live)} with "
          f"keep_states: {'all' if keep == 'live' else 'live'})")
