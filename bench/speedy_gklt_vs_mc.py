"""GKLT against direct Monte Carlo on SPEEDY (docs/speedy.md, "GKLT: heat waves as time
averages"): P(14-day mean of t_box >= a) from a GKLT database and from a montecarlo database
of the same campaign (whose target is never reached, so every fortnight runs to the end).
Prints the table and writes the figure.

    python bench/speedy_gklt_vs_mc.py GKLT.h5 MC.h5 OUT.png
"""
from __future__ import annotations

import sys

import numpy as np

from orchestrator.core.gklt import return_times
from orchestrator.store import Database


def mc_time_averages(db, name: str) -> np.ndarray:
    col = db.meta.observable_names.index(name)
    out = []
    for v in db.replicas():
        for tid in db.ensemble(v.index).tolist():
            tr = db.trajectory(int(tid), v.index)
            out.append(float(np.mean(tr.observables[:, col])))
    return np.array(out)


def main(gklt_path: str, mc_path: str, png: str) -> None:
    with Database(gklt_path) as g, Database(mc_path) as m:
        name = g.meta.tilt_observable
        avg = mc_time_averages(m, name)
        a = np.linspace(np.quantile(avg, 0.1), max(avg.max(), g.meta.threshold), 10)
        rt = return_times(g, a)
        n = avg.size
        p_mc = np.array([(avg >= x).mean() for x in a])
        se_mc = np.sqrt(np.maximum(p_mc * (1 - p_mc), 1.0 / n) / n)
        print(f"{'a (K)':>8} {'GKLT p':>10} {'± se':>9} {'MC p':>8} {'± se':>8}  (MC: {n} fortnights)")
        for i, x in enumerate(a):
            print(f"{x:8.3f} {rt.p[i]:10.4g} {rt.p_stderr[i]:9.2g} {p_mc[i]:8.4g} {se_mc[i]:8.2g}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.errorbar(a, rt.p, yerr=rt.p_stderr, fmt="o-", capsize=3,
                label=f"GKLT, {rt.p_replicas.shape[0]} replicas (± 1 s.e.)")
    ax.errorbar(a + 0.01, p_mc, yerr=se_mc, fmt="s--", capsize=3,
                label=f"direct Monte Carlo, {n} fortnights (± 1 s.e.)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(1e-5, 0.3 * float(np.min(rt.p[rt.p > 0])) if (rt.p > 0).any() else 1e-5))
    ax.set_xlabel(f"threshold a of the 14-day mean of {name} (K)")
    ax.set_ylabel("P(14-day mean >= a)")
    ax.set_title("SPEEDY, 1-14 June, European box: GKLT against Monte Carlo")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    print(f"figure: {png}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
