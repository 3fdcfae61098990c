#!/usr/bin/env python3
"""Units the README's `cargo run --release -- demo` would compile that the README's test
command (`cargo test --workspace --release`) does not already build (.ci/feature-drift.sh).

Each build unit gets a signature: package, target, mode, features, profile and, recursively,
its dependencies' signatures (what cargo's artifact hash depends on). A unit of the first
graph whose signature is absent from the second is compiled again; the causes are those whose
dependencies are all shared; every unit compiled again whose features differ is printed
with them.

Usage: feature_drift.py RUN_GRAPH.json TEST_GRAPH.json   (cargo --unit-graph output)
Exit 0 when every unit is shared, 1 otherwise.
"""
import hashlib
import json
import sys


def signatures(path):
    units = json.load(open(path))["units"]
    memo = {}

    def sig(i):
        if i not in memo:
            u = units[i]
            profile = dict(u["profile"])
            profile.pop("name", None)
            base = json.dumps(
                [u["pkg_id"], u["target"]["kind"], u["target"]["name"], u["mode"],
                 sorted(u["features"]), profile, u.get("platform")],
                sort_keys=True,
            )
            deps = sorted(sig(d["index"]) for d in u["dependencies"])
            memo[i] = hashlib.sha1("|".join([base] + deps).encode()).hexdigest()
        return memo[i]

    return units, [sig(i) for i in range(len(units))]


def main():
    run_units, run_sigs = signatures(sys.argv[1])
    test_units, test_sigs = signatures(sys.argv[2])
    shared = set(test_sigs)
    missing = [i for i, s in enumerate(run_sigs) if s not in shared]
    for i in missing:
        u = run_units[i]
        peers = [t for t in test_units if t["pkg_id"] == u["pkg_id"]
                 and t["target"]["kind"] == u["target"]["kind"] and t["mode"] == u["mode"]]
        diff = sorted({f for t in peers for f in set(t["features"]) ^ set(u["features"])})
        root = all(run_sigs[d["index"]] in shared for d in u["dependencies"])
        if diff or root:
            print(f"{'cause' if root else 'differs'}: {u['pkg_id']} ({u['mode']} "
                  f"{','.join(u['target']['kind'])}): features differing from the test build: "
                  f"{diff or 'none (profile or dependencies)'}")
    names = sorted({run_units[i]["target"]["name"] for i in missing})
    print(f"{len(missing)} of {len(run_units)} units of the run build are not built by the "
          f"test build: {' '.join(names)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
