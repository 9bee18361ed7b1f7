"""Fuzz every target for a fixed time each and report seconds, executions and unique crashes per target.

``python -m fuzz.campaign --seconds 240 [TARGET …] [--out DIR]``: runs ``fuzz/harness.py`` under atheris per target,
restarting it after a crash until the time is spent; crash inputs land in ``DIR/<target>/`` (default
``fuzz/artifacts``, ignored by git); one summary line per target is printed and written to ``DIR/summary.txt``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def _signature(output: str) -> str | None:
    """'ExceptionType at file:line' of the uncaught exception atheris printed, or None."""
    if "Uncaught Python exception" not in output:
        return None
    tail = output.split("Uncaught Python exception", 1)[1]
    frames = re.findall(r'File "([^"]+)", line (\d+)', tail)
    kind = re.search(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit|Interrupt)\w*):", tail, re.M)
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "?"
    return f"{kind.group(1) if kind else 'exception'} at {where}"


def fuzz_target(name: str, seconds: float, out: Path) -> dict[str, object]:
    """Run target `name` for `seconds` (restarting after crashes); its statistics."""
    artifacts = out / name
    artifacts.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    from fuzz.seeds import write_seeds

    write_seeds(name, corpus)
    start = time.monotonic()
    executions, crashes, runs = 0, {}, 0
    while (left := seconds - (time.monotonic() - start)) > 5:
        runs += 1
        cmd = [
            sys.executable,
            str(_ROOT / "fuzz" / "harness.py"),
            name,
            f"-max_total_time={int(left)}",
            "-timeout=20",
            "-rss_limit_mb=4000",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ]
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=_ROOT,
            check=False,
            env={"PYTHONPATH": str(_ROOT), **dict(__import__("os").environ)},
        )
        output = done.stdout + done.stderr
        units = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
        done_runs = re.findall(r"Done (\d+) runs", output)
        execs = re.findall(r"^#(\d+)\s", output, re.M)
        executions += int(units[-1]) if units else int(done_runs[-1]) if done_runs else int(execs[-1]) if execs else 0
        signature = _signature(output)
        if signature is not None:
            crashes.setdefault(signature, output[output.find("Uncaught Python exception") :][:3000])
        elif done.returncode not in (0,):
            crashes.setdefault(f"exit {done.returncode}", output[-3000:])
    elapsed = time.monotonic() - start
    return {
        "target": name,
        "seconds": round(elapsed),
        "executions": executions,
        "restarts": runs - 1,
        "unique_crashes": len(crashes),
        "crashes": crashes,
    }


def main() -> None:
    """Command line entry."""
    from fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--out", type=Path, default=_ROOT / "fuzz" / "artifacts")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.targets:
        stats = fuzz_target(name, args.seconds, args.out)
        line = (
            f"{name}: {stats['seconds']} s, {stats['executions']} executions, {stats['unique_crashes']} unique "
            f"crashes" + "".join(f"\n  {sig}" for sig in stats["crashes"])
        )  # type: ignore[attr-defined]
        print(line, flush=True)
        with open(args.out / "summary.txt", "a") as fh:
            fh.write(line + "\n")
        for k, (sig, text) in enumerate(stats["crashes"].items()):  # type: ignore[attr-defined]
            (args.out / name / f"crash_{k}.txt").write_text(sig + "\n" + text)


if __name__ == "__main__":
    main()
