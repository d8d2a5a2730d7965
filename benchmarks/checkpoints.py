"""Fingerprints of every example spec's final checkpoint: ``python -m benchmarks.checkpoints``.

Not a test (it trains every spec in ``specs/`` to the end, about 7 minutes): a refactoring check.
Each spec is trained with ``--seed 0 --threads 1`` through the command line into a temporary
directory, and every array of its ``checkpoints/last.npz`` is hashed (SHA-256 of dtype, shape and
bytes). ``--out FILE`` writes the fingerprints as JSON; ``--compare FILE`` trains again and lists
every array that differs from FILE's, exiting 1 if any does. Run the first on the old tree and
the second on the new one to show that a change left training bit for bit the same."""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def fingerprint(path: pathlib.Path) -> dict[str, str]:
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for key in sorted(z.files):
            a = np.ascontiguousarray(z[key])
            h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
            out[key] = h.hexdigest()
        return out


# An example whose init: loads another example's run (the --set key, the example that writes it).
TEACHERS = {"distill_digits": ("init.0.checkpoint", "digits_teacher")}


def train(spec: pathlib.Path, work: pathlib.Path) -> dict[str, str]:
    out = work / spec.stem
    sets: list[str] = []
    if spec.stem in TEACHERS:
        key, teacher = TEACHERS[spec.stem]
        if not (work / teacher).exists():
            train(spec.parent / f"{teacher}.yaml", work)
        sets = ["--set", f"{key}={work / teacher / 'checkpoints' / 'best.npz'}"]
    cmd = [
        sys.executable,
        "-c",
        "from onlytorch_cli.main import cli; cli()",
        "train",
        str(spec),
        "--seed",
        "0",
        "--threads",
        "1",
        "--out",
        str(out),
        "--quiet",
        *sets,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{spec.name}: exit {done.returncode}\n{done.stderr}")
    return fingerprint(out / "checkpoints" / "last.npz")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the fingerprints to this JSON file")
    ap.add_argument("--compare", help="compare with the fingerprints in this JSON file")
    ap.add_argument("specs", nargs="*", help="spec files (default: every specs/*.yaml)")
    args = ap.parse_args(argv)
    specs = [pathlib.Path(s).resolve() for s in args.specs] or sorted((ROOT / "specs").glob("*.yaml"))
    result: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            start = time.perf_counter()
            result[spec.name] = train(spec, pathlib.Path(tmp))
            print(f"{spec.name}: {len(result[spec.name])} arrays, {time.perf_counter() - start:.1f} s", flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.compare:
        old = json.loads(pathlib.Path(args.compare).read_text())
        bad = 0
        for name, arrays in result.items():
            if name not in old:
                print(f"{name}: not in {args.compare}")
                bad += 1
                continue
            diff = sorted(k for k in set(arrays) | set(old[name]) if arrays.get(k) != old[name].get(k))
            same = len(arrays) - len([k for k in diff if k in arrays])
            print(f"{name}: {same}/{len(arrays)} arrays identical" + (f"; differ: {', '.join(diff)}" if diff else ""))
            bad += bool(diff)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
