"""Privacy (issue 14): no patient identifier from the input DICOM reaches anything the jobs write.

A tiny synthetic cohort (SPECT as NM DICOM) gets a patient's name, ID, birth date, accession number and institution
injected into every DICOM header with pydicom; ``ludl validate``, ``ludl dosimetry`` and ``ludl prepare`` run on it,
and every file they write — CSV, JSON, HTML, PNG text chunks, NIfTI headers, DICOM headers, Hydra run records
(``.ludl/``), compressed or not — plus every file name and the console output is scanned for each identifier.
``ludl synth``'s own output is scanned too (it must never invent identifiers either).
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import pydicom
import pytest

from ludl.cli import main

# Distinctive values, so a hit is never a coincidence; dates also in the ISO spellings a writer might use.
IDENTIFIERS = {
    "name": ("Qwertyson^Zelda", "Qwertyson", "Zelda"),
    "patient_id": ("MRN84736251",),
    "birth_date": ("19470219", "1947-02-19"),
    "accession": ("ACC55512377",),
    "institution": ("Hospital of Saint Privatus",),
}


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return data


def _png_text(data: bytes) -> bytes:
    """The text of a PNG's tEXt, zTXt and iTXt chunks (compressed ones inflated)."""
    out, pos = b"", 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            out += body + b"\n"
        elif kind == b"zTXt":  # keyword \0 method compressed-text
            key, _, rest = body.partition(b"\0")
            out += key + b" " + _inflate(rest[1:]) + b"\n"
        elif kind == b"iTXt":  # keyword \0 flag method language \0 translated keyword \0 text
            key, _, rest = body.partition(b"\0")
            text = rest[2:].split(b"\0", 2)[-1]
            out += key + b" " + (_inflate(text) if rest[:1] == b"\x01" else text) + b"\n"
        pos += 12 + length
    return out


def _readable(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            pass
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        data += _png_text(data)
    return data


def scan_for_identifiers(root: Path, identifiers: dict[str, tuple[str, ...]], console: str = "") -> list[str]:
    """Every place under `root` (names and contents) and in `console` where an identifier appears."""
    hits = []
    patterns = {kind: [v.encode() for v in values] for kind, values in identifiers.items()}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        for kind, values in patterns.items():
            if any(v.decode().lower() in relative.lower() for v in values):
                hits.append(f"file name {relative}: {kind}")
        if path.is_file():
            data = _readable(path).lower()
            for kind, values in patterns.items():
                if any(v.lower() in data for v in values):
                    hits.append(f"{relative}: {kind}")
    for kind, values in identifiers.items():
        if any(re.search(re.escape(v), console, re.I) for v in values):
            hits.append(f"console output: {kind}")
    return hits


def _inject(cohort: Path) -> int:
    """Write the identifiers into every DICOM file of the cohort; the number of files changed."""
    n = 0
    for file in sorted(cohort.rglob("*.dcm")):
        ds = pydicom.dcmread(file)
        ds.PatientName = IDENTIFIERS["name"][0]
        ds.PatientID = IDENTIFIERS["patient_id"][0]
        ds.PatientBirthDate = IDENTIFIERS["birth_date"][0]
        ds.AccessionNumber = IDENTIFIERS["accession"][0]
        ds.InstitutionName = IDENTIFIERS["institution"][0]
        ds.save_as(file)
        n += 1
    return n


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_scan_finds_each_identifier(tmp_path: Path) -> None:
    """The scanner itself: a hit in a file name, a gzip'd file, a PNG text chunk and the console."""
    (tmp_path / "MRN84736251.csv").write_text("x")
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(b'{"who": "QWERTYSON^ZELDA"}'))
    text = b"Comment\0\x01\0en\0\0" + zlib.compress(b"born 1947-02-19")  # a compressed iTXt chunk
    chunk = len(text).to_bytes(4, "big") + b"iTXt" + text + b"\0\0\0\0"
    (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    hits = scan_for_identifiers(tmp_path, IDENTIFIERS, console="Hospital of Saint Privatus")
    assert sorted(hits) == [
        "a.json.gz: name",
        "console output: institution",
        "file name MRN84736251.csv: patient_id",
        "p.png: birth_date",
    ]


@pytest.mark.slow
def test_no_identifier_in_any_job_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort, out = tmp_path / "cohort", tmp_path / "out"
    assert _run(["synth", "preset=tiny", "n_patients=1", f"out={cohort}", "overrides.image_format=dicom"]) == 0
    assert scan_for_identifiers(cohort, IDENTIFIERS) == []
    assert _inject(cohort) >= 5  # the SPECT beds and time points as NM DICOM
    injected = scan_for_identifiers(cohort, IDENTIFIERS)
    assert {hit.split(": ")[1] for hit in injected} == set(IDENTIFIERS)  # the scanner sees what was injected

    assert _run(["validate", f"cohort={cohort}"]) == 0
    patient = "SYN0001"
    assert _run(["dosimetry", f"cohort={cohort}", f"patient={patient}", "cycle=1", f"out={out / 'dosimetry'}"]) == 0
    assert _run(["prepare", f"cohort={cohort}", f"out={out / 'prepared'}", "workers=1"]) == 0
    console = capsys.readouterr()
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert "dose_rtdose.dcm" in written and "case.json" in written  # DICOM and JSON outputs are in the scan
    assert scan_for_identifiers(out, IDENTIFIERS, console.out + console.err) == []
