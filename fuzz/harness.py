"""Run one fuzz target under atheris (libFuzzer): ``python -m fuzz.harness TARGET [libFuzzer options] [CORPUS …]``.

Without a corpus folder the target's seeds are written to ``fuzz/corpus/<target>/`` (ignored by git) first.
Examples: ``python -m fuzz.harness nifti -max_total_time=300``; replay one crash: ``python -m fuzz.harness nifti
crash-…``. The per-target scripts ``fuzz/fuzz_<target>.py`` are the same with the target fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


def main(argv: list[str] | None = None) -> None:
    """Start libFuzzer on the target named in argv[1]; never returns."""
    import atheris

    args = list(sys.argv if argv is None else argv)
    if len(args) < 2:
        raise SystemExit("usage: python -m fuzz.harness TARGET [libFuzzer options] [CORPUS …]")
    name = args.pop(1)
    with atheris.instrument_imports(include=["ludl", "pydicom", "highdicom"]):
        import ludl.io.ct
        import ludl.io.manifest
        import ludl.io.nifti
        import ludl.io.nm
        import ludl.io.pet
        import ludl.io.rtdose
        import ludl.io.rtstruct
        import ludl.io.seg  # noqa: F401 - imported under instrumentation for coverage feedback
        from fuzz.targets import TARGETS, quiet, run_one
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; targets: {', '.join(TARGETS)}")
    if not any(not a.startswith("-") for a in args[1:]):
        from fuzz.seeds import write_seeds

        corpus = CORPUS_DIR / name
        write_seeds(name, corpus)
        args.append(str(corpus))
    quiet()
    atheris.Setup(args, lambda data: run_one(name, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
