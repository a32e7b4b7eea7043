"""``tams report``: the estimate across replicas, the cost, return times, PNG figures.

Figures (matplotlib, Agg backend, no display needed) go to ``<db stem>.report/`` unless
``--figures DIR`` says otherwise:

* ``scores.png`` — the scores of replica 0's final ensemble against time, with the target;
* ``levels.png`` — the level against the iteration, one line per replica;
* ``estimates.png`` — every replica's estimate, their mean and 95 % confidence band
  (``orchestrator.core.stats.ci95``: log-normal, within [0, 1]) and a reference value given
  with ``--reference P``;
* ``first_passage.png`` — histogram of the first-passage times (first step with score >=
  target) of the final ensembles' trajectories that reached the target;
* ``return_times.png`` and ``return_times.csv`` with ``--return-times QUANTITY``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from orchestrator.core.algorithm import Outcome
from orchestrator.core.stats import binomial_summary, summarize


def _time(db) -> str:
    """The time axis label: ``model.time_units`` or "model time units"."""
    return f"time ({db.meta.time_label})"


def _fmt(p: float) -> str:
    return "—" if p is None or not math.isfinite(p) else f"{p:.4g}"


def _settings(db) -> dict:
    """From the database's typed metadata (no re-parsing of the stored YAML)."""
    m = db.meta
    return {"n": m.n, "k": m.k, "target": m.target, "horizon": m.horizon, "units": m.time_label}


def text_report(db, reference: float | None = None) -> str:
    st = _settings(db)
    reps = db.replicas()
    finished = [v for v in reps if v.outcome != 0]
    out = [f"campaign {db.name} (seed {db.seed}), {len(finished)}/{len(reps)} replicas finished; "
           f"horizon T = {st['horizon']:g} {st['units']} ({db.meta.horizon_steps} steps of "
           f"dt = {db.meta.dt:g})"]
    for v in reps:
        note = "" if v.outcome in (0, 1) else f"  ({v.outcome.name.lower()})"
        out.append(f"  replica {v.index:4d}: p = {_fmt(v.estimate) if v.outcome else 'running':>10}"
                   f"  iterations {v.iterations:5d}  model steps {v.model_steps}{note}")
    extinct = [v for v in finished if v.outcome == Outcome.EXTINCT]
    if extinct:
        out.append(f"extinct: {len(extinct)} of {len(finished)} finished replicas "
                   f"({100 * len(extinct) / len(finished):.0f} %), each counted with estimate 0 "
                   "as the unbiased estimator requires")
        why = [extinction_reason(db, v) for v in extinct]
        out += [f"  {line} ({reason})" for reason, line in why]
        for reason in dict.fromkeys(reason for reason, _ in why):
            out.append(f"  {reason}: {EXTINCTION_FIXES[reason]}")
    algo = db.meta.algorithm
    s = summarize([v.estimate for v in finished])
    if algo == "montecarlo" and finished:
        m = st["n"]
        k = sum(int(v.n_reached) for v in finished)
        s = binomial_summary(k, m * len(finished), m)
        out.append(f"estimate (direct Monte Carlo): p = {k}/{m * len(finished)} = {s.mean:.4g} ± "
                   f"{s.stderr:.2g} (binomial standard error), 95 % CI [{s.ci_low:.4g}, "
                   f"{s.ci_high:.4g}] (Wilson), {len(finished)} replica(s) of M = {m} "
                   "trajectories pooled")
    elif algo == "gklt" and s.n >= 1:
        m = db.meta
        what = (f"p = P(time average of {m.tilt_observable} over T >= {m.threshold:g}) "
                f"(GKLT, k = {m.tilt:g}, N = {m.n}, resampling every {m.resample_every} steps)")
        if s.n >= 2:
            out.append(f"estimate: {what} = {s.mean:.4g} ± {s.stderr:.2g} (standard error), "
                       f"95 % CI [{s.ci_low:.4g}, {s.ci_high:.4g}], {s.n} replicas; relative "
                       f"std of one run {_fmt(s.rel_std)}")
        else:
            out.append(f"estimate: {what} = {s.mean:.4g} (one replica: no confidence interval)")
    elif s.n >= 2 and s.mean == 0:
        out.append(f"estimate: p = 0, every one of {s.n} replicas estimated 0 (extinction or "
                   f"max_iterations); 95 % CI [0, {s.ci_high:.4g}], an upper bound only (each "
                   "estimate is at most 1, and p cannot exceed the chance of a non-zero one)")
    elif s.n >= 2:
        few = ("; fewer than 5 replicas leave their spread itself uncertain, hence a wide CI"
               if s.n < 5 else "")
        out.append(f"estimate: p = {s.mean:.4g} ± {s.stderr:.2g} (standard error), 95 % CI "
                   f"[{s.ci_low:.4g}, {s.ci_high:.4g}] (log-normal), {s.n} replicas{few}; "
                   f"relative std of one run {s.rel_std:.2f}")
    elif s.n == 1:
        out.append(f"estimate: p = {s.mean:.4g} (one replica: no confidence interval; set "
                   "replicas >= 2)")
    if algo == "tams" and s.n >= 1 and s.mean > 0:
        ideal = math.sqrt(-math.log(s.mean) / st["n"]) if s.mean < 1 else 0.0
        out.append(f"relative error of one run: ideal AMS sqrt(-log p / N) = {ideal:.2f} "
                   f"(N = {st['n']}), observed across replicas "
                   f"{_fmt(s.rel_std) if s.n >= 2 else '— (one replica)'}")
    if reference is not None and s.n >= 2:
        inside = s.ci_low <= reference <= s.ci_high
        dist = (f" ({(s.mean - reference) / s.stderr:+.1f} standard errors)" if s.stderr > 0
                else "")  # identical estimates (e.g. all 0) have no standard error
        out.append(f"reference p = {reference:.4g}: {'inside' if inside else 'OUTSIDE'} the 95 % CI"
                   f"{dist}")
    steps = sum(v.model_steps for v in reps)
    model_s = sum(v.wall_time for v in reps)
    out.append(f"cost: {sum(v.iterations for v in reps)} iterations, {steps} model steps, "
               f"{sum(v.segments for v in reps)} segments; model hours {model_s / 3600:.3g} h "
               f"(sum of segment wall times, {model_s:.1f} s); driver wall time "
               f"{db.wall_time():.1f} s")
    return "\n".join(out)


EXTINCTION_FIXES = {
    "ties at the horizon": (
        "children that branch at the last step of the horizon copy their parent whole and tie "
        "with it; when the paths peak at that last step (the score is still rising when the "
        "horizon ends) the ties spread to all N; fix: a horizon longer than the time the score "
        "needs to peak, a score that does not keep growing until the horizon, or a larger N "
        "(docs/wrapping.md, \"Extinction at the horizon\")"),
    "level stuck": (
        "the maxima tie although the paths peak before the horizon: the score is flat there "
        "(clipped to a constant, or made of observables written with too few digits); fix: a "
        "score that keeps separating trajectories (no clipping, observables written with full "
        "precision such as %.17g) or a larger N (docs/wrapping.md, \"Extinction at the "
        "horizon\")"),
}


def extinction_reason(db, v) -> tuple[str, str]:
    """(reason, one line of evidence) for replica ``v``, extinct (all N maxima tied at the
    level), from what the database stores: the final ensemble's paths, their branch steps and
    the levels of the iterations.  The reasons are the keys of :data:`EXTINCTION_FIXES`."""
    r, h = v.index, db.meta.horizon_steps
    created = db.table(r, "created")
    branch = dict(zip(created["id"].tolist(), created["branch_step"].tolist()))
    parent = dict(zip(created["id"].tolist(), created["parent"].tolist()))
    ens = [int(t) for t in db.ensemble(r)]
    n = len(ens)
    copies = sum(1 for t in ens if parent[t] >= 0 and branch[t] >= h)
    peak_last = 0
    for t in ens:
        tr = db.trajectory(t, r)
        if tr.scores.size:
            peak_last += int(tr.steps[int(np.argmax(tr.scores))] == h)
    z = v.level
    when = (f"at iteration {v.iterations + 1}" if v.iterations
            else "at the first iteration")
    head = f"replica {r}: extinct {when}, all {n} maxima tied at the level {z:.6g}"
    if copies or 2 * peak_last >= n:
        return "ties at the horizon", (
            f"{head}; {copies} are children branched at the last step of the horizon "
            f"(step {h}), {peak_last} of the {n} paths peak at that step")
    levels = np.asarray(db.iterations(r)["level"], dtype=np.float64)
    same = levels[::-1] == z
    stuck = int(levels.size if same.all() else np.argmin(same))
    since = ("the initial ensemble's paths already shared it" if not v.iterations else
             f"the level had not risen for {stuck} iteration(s) before" if stuck else
             "the level reached it at the last iteration")
    return "level stuck", (f"{head}; {since}; {peak_last} of the {n} paths peak at the last "
                           "step")


def first_passage_times(db, r: int, target: float) -> np.ndarray:
    """Time of the first step with score >= target, for each trajectory of the final ensemble
    of replica ``r`` that reached it."""
    times = []
    for t in db.ensemble(r):
        tr = db.trajectory(int(t), r)
        hit = np.flatnonzero(tr.scores >= target)
        if hit.size:
            times.append(tr.times[hit[0]])
    return np.array(times, dtype=np.float64)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def make_figures(db, folder: Path, reference: float | None = None) -> list[Path]:
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    st = _settings(db)
    reps = db.replicas()
    paths = []

    def save(fig, name):
        p = folder / name
        fig.tight_layout()
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)

    # (a) final ensemble of replica 0
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ens = db.ensemble(0)
    for i, t in enumerate(ens):
        tr = db.trajectory(int(t), 0)
        ax.plot(tr.times, tr.scores, lw=0.7, alpha=0.7, color=plt.cm.viridis(i / max(1, len(ens) - 1)))
    ax.axhline(st["target"], color="red", ls="--", lw=1.5, label=f"target {st['target']:g}")
    ax.set_xlabel(_time(db))
    ax.set_ylabel("score (dimensionless)")
    v0 = reps[0]
    if db.meta.algorithm == "gklt":
        ax.set_title(f"Final ensemble of replica 0: {len(ens)} trajectories, {v0.n_reached} "
                     f"with time average of {db.meta.tilt_observable} >= "
                     f"{db.meta.threshold:g}", fontsize=10)
    else:
        ax.set_title(f"Final ensemble of replica 0: {len(ens)} trajectories, "
                     f"{v0.n_reached} reached the target")
    ax.legend(loc="lower right")
    save(fig, "scores.png")

    gklt = db.meta.algorithm == "gklt"
    # (b) level against iteration (TAMS; a gklt iteration is a resampling, no level)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for v in reps:
        it = db.iterations(v.index)
        ax.plot(it["iteration"], it["level"], lw=1, label=f"replica {v.index}" if len(reps) <= 10 else None)
    ax.axhline(st["target"], color="red", ls="--", lw=1.5, label=f"target {st['target']:g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("level z_j (score, dimensionless)")
    ax.set_title(f"Level against iteration, {len(reps)} replicas (N = {st['n']}, k = {st['k']})")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    if gklt:
        plt.close(fig)
    else:
        save(fig, "levels.png")

    # (c) estimates with mean and CI band
    fig, ax = plt.subplots(figsize=(7, 4.2))
    fin = [v for v in reps if v.outcome != 0]
    s = summarize([v.estimate for v in fin])
    ax.plot([v.index for v in fin], [v.estimate for v in fin], "o", label="replica estimate")
    if s.n >= 1:
        ax.axhline(s.mean, color="k", lw=1.5, label=f"mean {s.mean:.3g}")
    if s.n >= 2:
        ax.axhspan(s.ci_low, s.ci_high, color="k", alpha=0.15,
                   label=f"95 % CI [{s.ci_low:.3g}, {s.ci_high:.3g}]")
    if reference is not None:
        ax.axhline(reference, color="red", ls="--", lw=1.5, label=f"reference {reference:.3g}")
    ax.set_xlabel("replica")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("estimate of p (probability)")
    what = (f"P(time average of {db.meta.tilt_observable} >= {db.meta.threshold:g})" if gklt
            else f"P(score reaches {st['target']:g} before T = {st['horizon']:g} {st['units']})")
    ax.set_title(f"Estimates of p = {what}", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, "estimates.png")

    # (d) first-passage times
    fig, ax = plt.subplots(figsize=(7, 4.2))
    fpt = np.concatenate([first_passage_times(db, v.index, st["target"]) for v in fin]) if fin \
        else np.zeros(0)
    if fpt.size:
        ax.hist(fpt, bins=min(40, max(5, int(np.sqrt(fpt.size)))), color="tab:blue",
                edgecolor="white", label=f"{fpt.size} trajectories (final ensembles)")
        ax.axvline(float(np.median(fpt)), color="k", ls=":", label=f"median {np.median(fpt):.3g}")
        ax.legend(fontsize=8)
    ax.set_xlim(0, st["horizon"])
    ax.set_xlabel(f"first-passage {_time(db)}")
    ax.set_ylabel("number of trajectories")
    ax.set_title("First-passage times to the target, final ensembles of all replicas")
    if gklt:
        plt.close(fig)
    else:
        save(fig, "first_passage.png")
    return paths


def diagnostics_figures(d, db, folder: Path) -> list[Path]:
    """level_crossing.png (P(max score >= z) with its 95 % band) and composite.png (each
    observable of the trajectories that reached B, aligned at the first passage)."""
    from orchestrator.core.diagnostics import interval95
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lo, hi = interval95(d.crossing_mean, d.crossing_se, d.n_replicas)
    ax.plot(d.levels, d.crossing_mean, "o-", label=f"mean of {d.n_replicas} replicas")
    if d.n_replicas >= 2:
        ax.fill_between(d.levels, np.clip(lo, 1e-300, 1), np.clip(hi, 1e-300, 1), alpha=0.2,
                        label="95 % interval")
    ax.set_yscale("log")
    ax.set_xlabel("level z (score, dimensionless)")
    ax.set_ylabel("P(max score over T >= z)")
    ax.set_title("Level-crossing curve from the weighted trajectories")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(folder / "level_crossing.png")
    fig.savefig(out[-1], dpi=90)
    plt.close(fig)
    k = len(d.observables)
    fig, axes = plt.subplots(k, 1, figsize=(7, 2.2 + 1.8 * k), squeeze=False)
    for i, name in enumerate(d.observables):
        ax = axes[i, 0]
        mu, sd = d.composite_mean[:, i], d.composite_std[:, i]
        ax.plot(d.lag_times, mu, color="k", lw=1.5, label="weighted mean")
        ax.fill_between(d.lag_times, mu - sd, mu + sd, alpha=0.25, label="± spread")
        ax.set_ylabel(name)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel(f"time before the first passage ({db.meta.time_label})")
    axes[0, 0].set_title("Composite of the trajectories that reached B")
    fig.tight_layout()
    out.append(folder / "composite.png")
    fig.savefig(out[-1], dpi=90)
    plt.close(fig)
    return out


def gklt_table(rt) -> str:
    lines = [f"probability and return time of the {rt.quantity} over T = {rt.window:g} "
             f"({rt.time_units}), GKLT, {rt.p_replicas.shape[0]} replicas",
             f"{'a':>10} {'P(avg >= a)':>12} {'± s.e.':>10} {'r(a)':>11} {'95 % CI of r(a)':>25}"]
    for i, a in enumerate(rt.amplitudes):
        lines.append(f"{a:>10.4g} {rt.p[i]:>12.4g} {rt.p_stderr[i]:>10.2g} {rt.r[i]:>11.4g} "
                     f"[{rt.r_low[i]:>10.4g}, {rt.r_high[i]:>10.4g}]")
    return "\n".join(lines)


def return_time_figure(rt, folder: Path) -> Path:
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    r = rt.r
    lo = np.where(np.isfinite(rt.r_low), r - rt.r_low, 0)
    hi = np.where(np.isfinite(rt.r_high), rt.r_high - r, 0)
    gklt = rt.quantity.startswith("time average")
    ax.errorbar(rt.amplitudes, r, yerr=[lo, hi], fmt="o-", capsize=3,
                label=f"{'GKLT' if gklt else 'TAMS'}, {rt.p_replicas.shape[0]} replicas (95 % CI)")
    ax.set_yscale("log")
    ax.set_xlabel(f"threshold a of the {rt.quantity} ({rt.units})" if gklt else
                  f"amplitude a of max({rt.quantity}) ({rt.units})")
    ax.set_ylabel(f"return time r(a) ({rt.time_units})")
    ax.set_title(f"Return times, r(a) = -T / log(1 - p(a)), T = {rt.window:g} {rt.time_units}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = folder / "return_times.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    (folder / "return_times.csv").write_text(rt.csv())
    return p


def report(path, figures: bool | str | Path = False, reference: float | None = None,
           return_times_of: str | None = None) -> int:
    from orchestrator.store import Database
    with Database(path) as db:
        print(text_report(db, reference))
        folder = None
        if figures:
            folder = Path(path).with_suffix(".report") if figures is True else Path(figures)
        rt = None
        if return_times_of:
            from orchestrator.core.returntimes import return_times
            if not any(v.outcome != Outcome.RUNNING for v in db.replicas()):
                print("return times: no replica has finished yet")
            else:
                rt = return_times(db, return_times_of)
                print(rt.table())
        finished = any(v.outcome != Outcome.RUNNING for v in db.replicas())
        diag = None
        if finished and db.meta.algorithm == "gklt":
            from orchestrator.core.gklt import return_times as gklt_return_times
            rt = gklt_return_times(db)
            print(gklt_table(rt))
        elif finished:
            from orchestrator.core.diagnostics import diagnostics
            diag = diagnostics(db)
            print(diag.table(db.meta.time_label))
        if folder is not None:
            made = make_figures(db, folder, reference)
            if diag is not None:
                made += diagnostics_figures(diag, db, folder)
            if rt is not None:
                made.append(return_time_figure(rt, folder))
            print(f"figures: {', '.join(str(p) for p in made)}")
    return 0
