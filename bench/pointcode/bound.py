#!/usr/bin/env python3
"""Information bound for the benchmark clouds (bits per point).

A cloud of N points drawn uniformly from the M grid cells its surface passes
through carries log2 C(M, N) bits as a set, i.e. about
N * (log2(M / N) + 1.44) bits. No coder that does not already know the surface
can beat it on average (a real coder must also learn the surface, so this is
a floor, not a target). M is computed from the surface geometry, not from the
cloud: a plane piece of world area dA and unit normal n crosses about
dA * det(S) * |S^-1 n|_1 cells of the grid, S = diag((2^B - 1) / extent_i)
being the world-to-grid scaling of the cloud's own bounds (written by the
`pointcode_bench` example as DIR/<shape>.bounds). Box faces lie on grid planes
(one layer of cells), which the same formula gives.

Usage: bound.py DIR  -> prints "shape bits M bound_bits_per_point" lines;
also importable (bound(DIR, shape, bits, n)).
"""
import math
import sys

import numpy as np

SHAPES = ["sphere", "box", "chair", "torus", "mug", "blob"]


def read_ply(path):
    with open(path) as fh:
        nv = nf = 0
        while True:
            line = fh.readline().split()
            if line[:2] == ["element", "vertex"]:
                nv = int(line[2])
            elif line[:2] == ["element", "face"]:
                nf = int(line[2])
            elif line == ["end_header"]:
                break
        v = np.array([[float(x) for x in fh.readline().split()] for _ in range(nv)])
        f = np.array([[int(x) for x in fh.readline().split()[1:4]] for _ in range(nf)])
    return v, f


def boxes_pieces(bx):
    """(area, normal) pieces of the outer surface of a union of boxes
    (Monte-Carlo acceptance per face for the parts inside another box)."""
    rng = np.random.default_rng(1)
    out = []
    for k, (lo, hi) in enumerate(bx):
        lo, hi = np.array(lo), np.array(hi)
        d = hi - lo
        for axis in range(3):
            for side in (lo[axis], hi[axis]):
                o = [a for a in range(3) if a != axis]
                area = d[o[0]] * d[o[1]]
                p = lo + rng.random((20000, 3)) * d
                p[:, axis] = side
                inside = np.zeros(len(p), bool)
                for i, (l2, h2) in enumerate(bx):
                    if i == k:
                        continue
                    l2, h2 = np.array(l2), np.array(h2)
                    inside |= np.all((p > l2 + 1e-9) & (p < h2 - 1e-9), axis=1)
                n = np.zeros(3)
                n[axis] = 1.0
                out.append((area * (1.0 - inside.mean()), n))
    return out


def pieces(d, shape):
    if shape == "sphere":
        rng = np.random.default_rng(2)
        n = rng.normal(size=(200000, 3))
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        a = math.pi / len(n)  # r = 0.5: area pi
        return [(a, x) for x in n]
    if shape == "box":
        return boxes_pieces([([0, 0, 0], [1.0, 0.6, 0.4])])
    if shape == "chair":
        leg = lambda x, z: ([x, 0.0, z], [x + 0.05, 0.45, z + 0.05])
        return boxes_pieces([
            ([0.0, 0.45, 0.0], [0.5, 0.5, 0.5]),
            ([0.0, 0.5, 0.45], [0.5, 1.0, 0.5]),
            ([0.05, 0.7, 0.43], [0.45, 0.75, 0.45]),
            leg(0.0, 0.0), leg(0.45, 0.0), leg(0.0, 0.45), leg(0.45, 0.45),
        ])
    v, f = read_ply(f"{d}/{shape}.ply")
    c = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    ln = np.linalg.norm(c, axis=1)
    ok = ln > 0
    return list(zip(0.5 * ln[ok], c[ok] / ln[ok, None]))


def cells(d, shape, bits):
    lo, hi = [np.array([float(x) for x in l.split()]) for l in open(f"{d}/{shape}.bounds")]
    s = (2 ** bits - 1) / np.maximum(hi - lo, 1e-12)
    det = s.prod()
    ps = pieces(d, shape)
    a = np.array([p[0] for p in ps])
    n = np.array([p[1] for p in ps])
    return float((a * det * np.abs(n / s).sum(axis=1)).sum())


def log2_binom(m, n):
    return (math.lgamma(m + 1) - math.lgamma(n + 1) - math.lgamma(m - n + 1)) / math.log(2)


def bound(d, shape, bits, n):
    m = cells(d, shape, bits)
    return m, log2_binom(max(m, n), n) / n


if __name__ == "__main__":
    d = sys.argv[1]
    for sh in SHAPES:
        for b in (8, 10, 12):
            m, bb = bound(d, sh, b, 2048)
            print(f"{sh} {b} M={m:.3g} bound={bb:.2f} bits/pt = {bb / 8:.3f} B/pt")
