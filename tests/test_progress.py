"""`ludl.progress`: plain timed lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io
import re

import pytest

from ludl.errors import InputError
from ludl.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    cases = ["P01_c1", "P02_c1", "P03_c1", "P04_c1"]
    with progress(len(cases), "prepare", unit="case", stream=stream) as step:
        for case in cases:
            step(note=case)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(cases)  # one line per step, nothing else
    for i, (line, case) in enumerate(zip(lines, cases, strict=True), start=1):
        match = re.fullmatch(rf"prepare: {i}/4 case \((\d+) %\) (\d+\.\d) s {case}", line)
        assert match is not None, line
        assert int(match[1]) == round(100 * i / 4)


def test_plain_lines_with_unknown_total_and_larger_steps() -> None:
    stream = io.StringIO()
    with progress(None, "synth", unit="patient", stream=stream) as step:
        step(advance=3)
        step(advance=2)
    assert [line.split(" ", 2)[1] for line in stream.getvalue().splitlines()] == ["3", "5"]
    assert "%" not in stream.getvalue()


def test_rich_bar_on_a_terminal() -> None:
    stream = _Terminal()
    with progress(3, "dosimetry", unit="case", stream=stream) as step:
        for _ in range(3):
            step(note="x")
    text = stream.getvalue()
    assert "dosimetry" in text and "3/3" in text
    assert "dosimetry: 1/3" not in text  # not the plain lines


def test_bar_can_be_forced_off_on_a_terminal() -> None:
    stream = _Terminal()
    with progress(1, "prepare", stream=stream, bar=False) as step:
        step()
    assert stream.getvalue().startswith("prepare: 1/1 item (100 %)")


def test_negative_total_is_refused() -> None:
    with pytest.raises(InputError, match="total"), progress(-1, "prepare"):
        pass
