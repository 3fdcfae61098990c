#!/usr/bin/env python3
"""Training clouds for format 5's prior tables (pointcode/v5_prior.rs).

Shapes deliberately *different* from the benchmark's six (no sphere, no
axis-aligned 1 x 0.6 x 0.4 box, chair, torus 0.35/0.12, mug or blob):
rotated ellipsoids, closed cylinders, cones, rotated and axis-aligned boxes
of random sizes, random unions of boxes, height-field patches, capsules,
rotated tori of other radii, with and without sensor-like noise, 1024-4096
points, quantized in their bounding box (as `pointcode::quantize`) at 8-12
bits. Writes `<name>_<bits>.xyz` (integer grid coordinates) into DIR.
Usage: python3 bench/pointcode/train_clouds.py DIR [SEED] [COUNT]
"""
import sys, os
import numpy as np

def rot(rng):
    q = rng.normal(size=4); q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a*a+b*b-c*c-d*d, 2*(b*c-a*d), 2*(b*d+a*c)],
                     [2*(b*c+a*d), a*a-b*b+c*c-d*d, 2*(c*d-a*b)],
                     [2*(b*d-a*c), 2*(c*d+a*b), a*a-b*b-c*c+d*d]])

def unit(rng, n):
    v = rng.normal(size=(n, 3)); return v / np.linalg.norm(v, axis=1, keepdims=True)

def ellipsoid(rng, n):
    # rejection on area is overkill; stretched sphere samples suffice for stats
    return unit(rng, n) * rng.uniform(0.2, 1.0, size=3)

def cylinder(rng, n):
    r, h = rng.uniform(0.1, 0.5), rng.uniform(0.2, 1.2)
    side, cap = 2*np.pi*r*h, 2*np.pi*r*r
    k = rng.random(n) < side/(side+cap)
    t = rng.uniform(0, 2*np.pi, n)
    z = np.where(k, rng.uniform(0, h, n), np.where(rng.random(n) < .5, 0, h))
    rr = np.where(k, r, r*np.sqrt(rng.random(n)))
    return np.stack([rr*np.cos(t), rr*np.sin(t), z], 1)

def cone(rng, n):
    r, h = rng.uniform(0.1, 0.5), rng.uniform(0.2, 1.0)
    s = np.sqrt(rng.random(n)); t = rng.uniform(0, 2*np.pi, n)
    return np.stack([r*s*np.cos(t), r*s*np.sin(t), h*(1-s)], 1)

def box_surface(rng, n, lo, hi):
    d = hi - lo
    fa = np.array([d[1]*d[2], d[0]*d[2], d[0]*d[1]])
    ax = rng.choice(3, size=n, p=fa/fa.sum())
    p = lo + rng.random((n, 3))*d
    side = rng.random(n) < .5
    p[np.arange(n), ax] = np.where(side, lo[ax], hi[ax])
    return p

def boxes(rng, n):
    k = rng.integers(1, 5)
    bx = []
    for _ in range(k):
        lo = rng.uniform(0, 0.6, 3); bx.append((lo, lo + rng.uniform(0.03, 0.6, 3)))
    areas = np.array([2*((h-l)[0]*(h-l)[1]+(h-l)[1]*(h-l)[2]+(h-l)[0]*(h-l)[2]) for l, h in bx])
    out = []
    while sum(len(o) for o in out) < n:
        i = rng.choice(k, p=areas/areas.sum())
        p = box_surface(rng, 256, *bx[i])
        inside = np.zeros(len(p), bool)
        for j, (l, h) in enumerate(bx):
            if j != i:
                inside |= np.all((p > l + 1e-9) & (p < h - 1e-9), axis=1)
        out.append(p[~inside])
    return np.concatenate(out)[:n]

def heightfield(rng, n):
    xy = rng.random((n, 2))
    f = rng.uniform(1, 6, 2); a = rng.uniform(0.02, 0.3)
    z = a*np.sin(f[0]*xy[:, 0]*np.pi)*np.cos(f[1]*xy[:, 1]*np.pi)
    return np.column_stack([xy, z])

def capsule(rng, n):
    r, h = rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.8)
    p = unit(rng, n) * r
    side = rng.random(n) < h/(h+2*r)
    t = rng.uniform(0, 2*np.pi, n)
    cyl = np.stack([r*np.cos(t), r*np.sin(t), rng.uniform(0, h, n)], 1)
    p[:, 2] += np.where(p[:, 2] > 0, h, 0)
    return np.where(side[:, None], cyl, p)

def torus(rng, n):
    R, r = rng.uniform(0.2, 0.6), rng.uniform(0.03, 0.2)
    a, b = rng.uniform(0, 2*np.pi, n), rng.uniform(0, 2*np.pi, n)
    return np.stack([(R+r*np.cos(b))*np.cos(a), (R+r*np.cos(b))*np.sin(a), r*np.sin(b)], 1)

SHAPES = [ellipsoid, cylinder, cone, boxes, heightfield, capsule, torus]

def main():
    d = sys.argv[1]; seed = int(sys.argv[2]) if len(sys.argv) > 2 else 7; count = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        f = SHAPES[i % len(SHAPES)]
        n = int(rng.choice([1024, 2048, 2048, 4096]))
        p = f(rng, n)
        if f is not boxes or rng.random() < .5:
            p = p @ rot(rng).T
        if rng.random() < .3:
            p = p + rng.normal(scale=rng.uniform(1e-4, 3e-3), size=p.shape)
        lo, hi = p.min(0).astype(np.float32), p.max(0).astype(np.float32)
        ext = np.where(hi - lo > 0, hi - lo, 1)
        for bits in (8, 10, 12):
            m = (1 << bits) - 1
            q = (np.clip((p.astype(np.float32) - lo)/ext, 0, 1)*m + .5).astype(np.int64)
            np.savetxt(f"{d}/{f.__name__}{i}_{bits}.xyz", q, fmt="%d")

main()
