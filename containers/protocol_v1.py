"""Helpers shared by the example models' verify.py scripts (python3 + numpy only).

A model-side view of TAMS file protocol v1 (docs/protocol.md): write a request, run a model
in a segment directory, read and validate what it left there, and a pure-Python copy of the
seed-mode generator of the example models (splitmix64 -> xoshiro256** -> polar method).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np

SEGMENT_KEYS = (
    "protocol_version", "state_in", "step0", "n_steps", "dt", "t0", "checkpoint_every",
    "checkpoint_prefix", "checkpoint_digits", "checkpoint_suffix", "noise_mode",
    "noise_file", "noise_dim", "seed", "trace_file",
)


class Failure(Exception):
    """A verification failure."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def nml_value(v) -> str:
    if isinstance(v, bool):
        return ".true." if v else ".false."
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return "'" + str(v).replace("'", "''") + "'"


def segment(*, step0: int, n_steps: int, dt: float, every: int, noise_dim: int,
            state_in: str = "", noise_mode: str = "file", seed: int = 0) -> dict:
    """The &segment group exactly as the orchestrator writes it."""
    return {
        "protocol_version": 1, "state_in": state_in, "step0": step0, "n_steps": n_steps,
        "dt": dt, "t0": step0 * dt, "checkpoint_every": every, "checkpoint_prefix": "ckpt_",
        "checkpoint_digits": 8, "checkpoint_suffix": ".bin", "noise_mode": noise_mode,
        "noise_file": "noise.bin" if noise_mode == "file" else "", "noise_dim": noise_dim,
        "seed": seed, "trace_file": "trace.txt",
    }


# the optional parts of v1 (docs/protocol.md §5a), written only when a campaign asks for them
OPTIONAL_KEYS = ("trace_format", "checkpoint_file", "state_offset")


def write_request(workdir: Path, seg: dict, params: dict, noise: np.ndarray | None = None) -> None:
    assert tuple(seg)[:len(SEGMENT_KEYS)] == SEGMENT_KEYS
    assert set(tuple(seg)[len(SEGMENT_KEYS):]) <= set(OPTIONAL_KEYS)
    lines = ["&segment"] + [f"  {k} = {nml_value(v)}," for k, v in seg.items()] + ["/"]
    lines += ["&parameters"] + [f"  {k} = {nml_value(v)}," for k, v in params.items()] + ["/"]
    (workdir / "request.nml").write_text("\n".join(lines) + "\n")
    (workdir / "request.json").write_text(json.dumps({"segment": seg, "parameters": params}, indent=1))
    if noise is not None:
        noise = np.ascontiguousarray(noise, dtype="<f8")
        assert noise.shape == (seg["n_steps"], seg["noise_dim"])
        noise.tofile(workdir / seg["noise_file"])


def run(binary: Path, workdir: Path, *, expect_ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([str(binary), "request.nml"], cwd=workdir, capture_output=True,
                       text=True, timeout=60)
    if expect_ok and p.returncode != 0:
        raise Failure(f"{binary.name} exited {p.returncode} in {workdir}: {p.stderr.strip()}")
    return p


def promised_checkpoints(step0: int, n_steps: int, every: int) -> list[int]:
    last = step0 + n_steps
    steps = [s for s in range(step0 + 1, last + 1) if s % every == 0]
    if not steps or steps[-1] != last:
        steps.append(last)
    return steps


def checkpoint_name(seg: dict, step: int) -> str:
    return f"{seg['checkpoint_prefix']}{step:0{seg['checkpoint_digits']}d}{seg['checkpoint_suffix']}"


def read_trace(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, times, observables[n, k]); reals parsed with float() so they round-trip."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    steps = np.array([int(r[0]) for r in rows], dtype=np.int64)
    vals = np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float64)
    return steps, vals[:, 0], vals[:, 1:]


def validate_segment(workdir: Path, seg: dict, n_obs: int, state_bytes: int):
    """What the orchestrator checks after a segment, plus exact times and checkpoint sizes."""
    steps, times, obs = read_trace(workdir / seg["trace_file"])
    s0, n = seg["step0"], seg["n_steps"]
    check(np.array_equal(steps, np.arange(s0 + 1, s0 + n + 1)), "trace: every step once, in order")
    check(obs.shape == (n, n_obs), f"trace: {n_obs} observables per line")
    check(np.array_equal(times, steps.astype(np.float64) * seg["dt"]), "trace: time == step*dt exactly")
    check(bool(np.isfinite(obs).all()), "trace: finite numbers")
    want = promised_checkpoints(s0, n, seg["checkpoint_every"])
    for s in want:
        f = workdir / checkpoint_name(seg, s)
        check(f.is_file(), f"checkpoint {f.name} present")
        check(f.stat().st_size == state_bytes, f"checkpoint {f.name} is {state_bytes} bytes")
    extra = sorted(p.name for p in workdir.glob(seg["checkpoint_prefix"] + "*")
                   if p.name not in {checkpoint_name(seg, s) for s in want})
    check(not extra, f"no unpromised checkpoints (found {extra})")
    return steps, times, obs, want


class SeedNoise:
    """The example models' seed-mode generator, in pure Python (math.log is libm's log)."""

    M = (1 << 64) - 1

    def __init__(self, seed: int):
        x = seed & self.M
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & self.M
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.M
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.M
            self.s.append(z ^ (z >> 31))
        self.spare = None

    def _rotl(self, x, k):
        return ((x << k) | (x >> (64 - k))) & self.M

    def next_u64(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & self.M, 7) * 9) & self.M
        t = (s[1] << 17) & self.M
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def normal(self) -> float:
        if self.spare is not None:
            v, self.spare = self.spare, None
            return v
        while True:
            u = 2.0 * ((self.next_u64() >> 11) * 2.0**-53) - 1.0
            v = 2.0 * ((self.next_u64() >> 11) * 2.0**-53) - 1.0
            q = u * u + v * v
            if 0.0 < q < 1.0:
                break
        f = math.sqrt(-2.0 * math.log(q) / q)
        self.spare = v * f
        return u * f

    def block(self, n_steps: int, noise_dim: int) -> np.ndarray:
        return np.array([[self.normal() for _ in range(noise_dim)] for _ in range(n_steps)])


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    den = np.maximum(np.abs(b), np.finfo(float).tiny)
    return float(np.max(np.abs(a - b) / den)) if a.size else 0.0


def fresh(base: Path, name: str) -> Path:
    d = base / name
    os.makedirs(d)
    return d


def verify_model(binary: Path, *, name: str, noise_dim: int, n_obs: int, state_bytes: int,
                 params: dict, reference, bitwise: bool, seed_mode: bool,
                 optional: bool = True, log=print) -> None:
    """Run the protocol checks against one model binary; raise Failure on the first problem.

    ``reference(state_in_bytes_or_None, noise[n, d], step0) -> (obs[n, n_obs], states[n] as bytes)``
    is the numpy implementation of the model's recursion.
    """
    import tempfile

    check(binary.is_file() and os.access(binary, os.X_OK), f"{binary} is built (run make)")
    rng = np.random.default_rng(20240601)
    N = rng.standard_normal((300, noise_dim))
    dt = 0.01
    with tempfile.TemporaryDirectory(prefix=f"verify-{name}-") as tmp:
        base = Path(tmp)

        def compare(obs, ref, what):
            rel = max_rel_diff(obs, ref)
            same = np.array_equal(obs, ref)
            log(f"  {what}: max relative difference to numpy = {rel:.3g}"
                f" ({'bitwise identical' if same else 'not bitwise identical'})")
            check(same if bitwise else rel < 1e-12, f"{what}: trace matches the numpy recursion")

        # 1. 300 steps from step 0, file noise
        a = fresh(base, "A")
        seg_a = segment(step0=0, n_steps=300, dt=dt, every=100, noise_dim=noise_dim)
        write_request(a, seg_a, params, N)
        run(binary, a)
        _, _, obs_a, ck = validate_segment(a, seg_a, n_obs, state_bytes)
        ref_obs, ref_states = reference(None, N, 0)
        compare(obs_a, ref_obs, "A (steps 1..300, file noise)")
        for s in ck:
            check((a / checkpoint_name(seg_a, s)).read_bytes() == ref_states[s - 1],
                  f"A: checkpoint {s} holds the numpy state bit for bit")
        log(f"  A: checkpoints {ck} present, {state_bytes} bytes each, equal to numpy's state")

        # 2. restart from the step-100 checkpoint with the matching noise rows
        lines_a = (a / "trace.txt").read_text().splitlines()
        for tag, n, every in (("B", 200, 100), ("C", 125, 50)):
            b = fresh(base, tag)
            seg_b = segment(step0=100, n_steps=n, dt=dt, every=every, noise_dim=noise_dim,
                            state_in=str(a / checkpoint_name(seg_a, 100)))
            write_request(b, seg_b, params, N[100:100 + n])
            run(binary, b)
            _, _, obs_b, ck_b = validate_segment(b, seg_b, n_obs, state_bytes)
            check((b / "trace.txt").read_text().splitlines() == lines_a[100:100 + n],
                  f"{tag}: restarted trace reproduces A's steps 101..{100 + n} exactly")
            for s in ck_b:
                check((b / checkpoint_name(seg_b, s)).read_bytes() == ref_states[s - 1],
                      f"{tag}: checkpoint {s} bit for bit")
            log(f"  {tag}: restart from ckpt 100 for {n} steps (every {every}) reproduces A's"
                f" lines 101..{100 + n} exactly; checkpoints {ck_b}")

        # 2b. the optional parts of v1: a binary trace and one checkpoint file per segment
        if optional:
            d = fresh(base, "D")
            seg_d = {**seg_a, "trace_file": "trace.bin", "trace_format": "binary",
                     "checkpoint_file": "checkpoints.bin", "state_offset": 0}
            write_request(d, seg_d, params, N)
            run(binary, d)
            rows = np.fromfile(d / "trace.bin", dtype="<f8")
            check(rows.size == 300 * (2 + n_obs), "D: binary trace of 300 rows of float64")
            rows = rows.reshape(300, 2 + n_obs)
            steps_a, times_a, _ = read_trace(a / "trace.txt")
            check(np.array_equal(rows[:, 0], steps_a) and np.array_equal(rows[:, 1], times_a)
                  and np.array_equal(rows[:, 2:], obs_a),
                  "D: the binary trace holds the text trace's numbers bit for bit")
            blob = b"".join((a / checkpoint_name(seg_a, s)).read_bytes() for s in ck)
            check((d / "checkpoints.bin").read_bytes() == blob,
                  "D: checkpoints.bin holds A's checkpoints, in step order")
            check(not list(d.glob(seg_a["checkpoint_prefix"] + "*")),
                  "D: no file per checkpoint besides checkpoints.bin")
            e = fresh(base, "E")
            seg_e = {**segment(step0=200, n_steps=100, dt=dt, every=50, noise_dim=noise_dim,
                               state_in=str(d / "checkpoints.bin")),
                     "trace_file": "trace.bin", "trace_format": "binary",
                     "checkpoint_file": "checkpoints.bin", "state_offset": state_bytes}
            write_request(e, seg_e, params, N[200:300])
            run(binary, e)
            rows_e = np.fromfile(e / "trace.bin", dtype="<f8").reshape(-1, 2 + n_obs)
            check(np.array_equal(rows_e, rows[200:]),
                  "E: a restart from the record of step 200 (state_offset) reproduces D")
            check((e / "checkpoints.bin").read_bytes() == ref_states[249] + ref_states[299],
                  "E: its checkpoints.bin holds steps 250 and 300 bit for bit")
            log(f"  D/E: binary trace and checkpoints.bin equal A's text trace and files; a "
                f"restart at state_offset {state_bytes} (step 200) reproduces steps 201..300")

        # 3. seed mode
        if seed_mode:
            outs = {}
            for tag, seed in (("S1", 12345), ("S2", 12345), ("S3", 12346)):
                d = fresh(base, tag)
                seg_s = segment(step0=0, n_steps=300, dt=dt, every=100, noise_dim=noise_dim,
                                noise_mode="seed", seed=seed)
                write_request(d, seg_s, params)
                run(binary, d)
                validate_segment(d, seg_s, n_obs, state_bytes)
                outs[tag] = (d / "trace.txt").read_text()
            check(outs["S1"] == outs["S2"], "seed mode: same seed, same trace")
            check(outs["S1"] != outs["S3"], "seed mode: another seed, another trace")
            _, _, obs_s = read_trace(base / "S1" / "trace.txt")
            ref_s, _ = reference(None, SeedNoise(12345).block(300, noise_dim), 0)
            log("  seed mode: seed 12345 twice -> identical traces; seed 12346 -> different")
            compare(obs_s, ref_s, "S1 vs the Python copy of the generator")

        # 4. failures must exit non-zero with a message on stderr
        def must_fail(tag, mutate):
            d = fresh(base, tag)
            seg_f = segment(step0=0, n_steps=10, dt=dt, every=5, noise_dim=noise_dim)
            write_request(d, seg_f, params, N[:10])
            mutate(d, seg_f)
            p = run(binary, d, expect_ok=False)
            check(p.returncode != 0 and p.stderr.strip() != "", f"{tag}: non-zero exit with a message")
            log(f"  {tag}: exit {p.returncode}, stderr: {p.stderr.strip().splitlines()[0]}")

        must_fail("missing-noise", lambda d, s: (d / "noise.bin").unlink())
        must_fail("short-noise", lambda d, s: (d / "noise.bin").write_bytes(b"\0" * 8))
        must_fail("missing-state", lambda d, s: write_request(
            d, {**s, "state_in": str(d / "nope.bin")}, params, N[:10]))
        must_fail("bad-namelist", lambda d, s: (d / "request.nml").write_text("&segment\n  n_steps = ten\n/\n"))
        must_fail("no-request", lambda d, s: (d / "request.nml").unlink())
