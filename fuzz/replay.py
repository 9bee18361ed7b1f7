"""Deterministic replay: the seeds and fixed mutations of them through a target, without atheris (CI's short pass).

``python -m fuzz.replay [TARGET …] [--mutations N]`` prints per target the inputs run and the failures (exceptions
other than `LudlError`), and exits 1 when any target failed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["mutations", "replay"]


def mutations(seed: bytes, n: int, rng_seed: int = 0) -> Iterator[bytes]:
    """The seed, then `n` mutants: cuts, bit flips, byte runs set to 0x00/0xFF, duplicated and deleted spans."""
    yield seed
    rng = np.random.default_rng(rng_seed)
    size = len(seed)
    for k in range(n):
        kind = k % 5
        data = bytearray(seed)
        if kind == 0:  # truncation
            yield bytes(data[: int(rng.integers(0, max(size, 1)))])
            continue
        if size == 0:
            continue
        pos = int(rng.integers(0, size))
        if kind == 1:
            for _ in range(int(rng.integers(1, 8))):
                p = int(rng.integers(0, size))
                data[p] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:
            length = int(rng.integers(1, 16))
            data[pos : pos + length] = bytes([0xFF if rng.random() < 0.5 else 0x00]) * len(data[pos : pos + length])
        elif kind == 3:
            length = int(rng.integers(1, 64))
            data[pos:pos] = data[pos : pos + length]
        else:
            del data[pos : pos + int(rng.integers(1, 64))]
        yield bytes(data)


def replay(name: str, n_mutations: int = 200) -> tuple[int, list[str]]:
    """Run target `name` over its seeds and `n_mutations` mutants of each; (inputs run, failure descriptions)."""
    from fuzz.seeds import write_seeds
    from fuzz.targets import quiet, run_one

    quiet()
    failures: list[str] = []
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed_file in write_seeds(name, tmp):
            for i, data in enumerate(mutations(seed_file.read_bytes(), n_mutations)):
                count += 1
                try:
                    run_one(name, data)
                except Exception as err:  # the point: anything but LudlError is a finding
                    where = traceback.extract_tb(err.__traceback__)[-1]
                    failures.append(
                        f"{name} {seed_file.name} mutant {i}: {type(err).__name__}: {err} "
                        f"({Path(where.filename).name}:{where.lineno})"
                    )
    return count, failures


def main() -> None:
    """Command line entry."""
    from fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--mutations", type=int, default=200)
    args = parser.parse_args()
    failed = False
    for name in args.targets:
        start = time.perf_counter()
        count, failures = replay(name, args.mutations)
        print(f"{name}: {count} inputs in {time.perf_counter() - start:.1f} s, {len(failures)} failures")
        unique: dict[str, str] = {}
        for line in failures:
            unique.setdefault(line.split(": ", 1)[1].split(": ")[0] + line.rsplit("(", 1)[-1], line)
        for line in unique.values():
            print("  " + line[:300])
        failed = failed or bool(failures)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
