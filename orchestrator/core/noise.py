"""Keyed, counter-based randomness (DESIGN §5).

Every random number of a campaign is a pure function of the campaign ``seed`` and a few
integers, so results do not depend on the number of workers, their kind, the order in which
segments finish, or on interruptions:

* the noise of step ``s`` of a trajectory is a pure function of (trajectory key, s): a
  Philox-4x64 block at counter ``s * blocks_per_step`` turned into normals by Box–Muller.
  A segment's noise is generated vectorised, in one call, whatever its first step;
* survivor choices at iteration ``j`` come from a generator keyed by (seed, replica, j);
* in ``seed`` mode the integer seed of a segment is a pure function of (key, step0).
"""
from __future__ import annotations

import numpy as np

# Domain separation tags: keep the streams of different purposes apart.
_TAG_NOISE = 0x4E4F495345  # "NOISE"
_TAG_SURVIVOR = 0x5355525649  # "SURVI"
_TAG_SEGSEED = 0x5345454453  # "SEEDS"

_TWO_PI = 2.0 * np.pi
_INV_2_53 = 1.0 / 9007199254740992.0


def trajectory_key(seed: int, replica: int, trajectory: int) -> tuple[int, int]:
    """The 128-bit Philox key of one trajectory's noise."""
    words = np.random.SeedSequence([_TAG_NOISE, seed, replica, trajectory]).generate_state(
        2, np.uint64)
    return int(words[0]), int(words[1])


def _uniforms(key: tuple[int, int], first_block: int, n_blocks: int) -> np.ndarray:
    """4*n_blocks uint64 words of Philox(key) for counters first_block .. first_block+n_blocks-1."""
    bg = np.random.Philox(key=np.array(key, dtype=np.uint64),
                          counter=np.array([first_block, 0, 0, 0], dtype=np.uint64))
    return bg.random_raw(4 * n_blocks)


def step_noise(key: tuple[int, int], first_step: int, n_steps: int, dim: int) -> np.ndarray:
    """Standard normals of steps ``first_step .. first_step+n_steps-1``, shape (n_steps, dim).

    Row ``i`` depends only on (key, first_step + i): generating steps 0..99 at once or in two
    halves gives the same bits.
    """
    if n_steps <= 0:
        return np.zeros((0, dim))
    pairs = (dim + 1) // 2
    words_per_step = 2 * pairs
    blocks_per_step = (words_per_step + 3) // 4
    raw = _uniforms(key, first_step * blocks_per_step, n_steps * blocks_per_step)
    raw >>= np.uint64(11)
    # u = ((raw >> 11) + 0.5) / 2**53 in (0, 1); r = sqrt(-2 log u1), theta = 2 pi u2; the
    # same IEEE operations in the same order as ever, in place (the noise's bits are the
    # campaign's: DESIGN §5), a worker draws it for every segment
    u = raw.reshape(n_steps, 4 * blocks_per_step)[:, :words_per_step].astype(np.float64)
    u += 0.5
    u *= _INV_2_53
    r = np.log(u[:, 0::2])
    r *= -2.0
    np.sqrt(r, out=r)
    theta = u[:, 1::2]
    theta *= _TWO_PI
    out = np.empty((n_steps, 2 * pairs))
    np.multiply(np.cos(theta), r, out=out[:, 0::2])
    np.multiply(np.sin(theta), r, out=out[:, 1::2])
    return out[:, :dim]


def survivor_rng(seed: int, replica: int, iteration: int) -> np.random.Generator:
    """The generator of survivor choices at one iteration of one replica."""
    return np.random.Generator(np.random.Philox(
        np.random.SeedSequence([_TAG_SURVIVOR, seed, replica, iteration])))


def segment_seed(key: tuple[int, int], step0: int) -> int:
    """The integer seed handed to a ``seed``-mode model for the segment starting at step0,
    in [1, 2**62)."""
    w = np.random.SeedSequence([_TAG_SEGSEED, key[0], key[1], step0]).generate_state(
        1, np.uint64)[0]
    return int(w >> np.uint64(2)) or 1


class NoisePlan:
    """A segment's file-mode noise as a recipe: the (key, first step, steps) pieces of its path,
    each step's noise its owner's (DESIGN §5).  It behaves as the (n_steps, dim) array it
    stands for (``np.asarray``, indexing, ``shape``), computed on first use and cached.

    Why a recipe: a queued segment would otherwise hold its noise array in the driver until a
    worker is free (8 bytes per step and dimension for every queued segment: the initial
    ensemble alone is N x horizon), and the driver would spend its time drawing noise that
    the workers can draw in parallel.  Pickled, it is the recipe only.
    """

    __slots__ = ("pieces", "dim", "_cache")

    def __init__(self, pieces, dim: int):
        self.pieces = tuple((int(k0), int(k1), int(first), int(n)) for k0, k1, first, n in pieces)
        self.dim = int(dim)
        self._cache: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (sum(p[3] for p in self.pieces), self.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def materialize(self) -> np.ndarray:
        if self._cache is None:
            parts = [step_noise((k0, k1), first, n, self.dim) for k0, k1, first, n in self.pieces]
            if not parts:
                self._cache = np.zeros((0, self.dim))
            else:
                self._cache = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self._cache

    def release(self) -> None:
        """Forget the drawn array (the recipe stays; drawing again gives the same bits)."""
        self._cache = None

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.materialize()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __getitem__(self, i):
        return self.materialize()[i]

    def __getstate__(self):
        return (self.pieces, self.dim)

    def __setstate__(self, state) -> None:
        self.pieces, self.dim = state
        self._cache = None

    def __repr__(self) -> str:
        return f"NoisePlan({len(self.pieces)} piece(s), shape {self.shape})"
