"""Provenance of what ludl writes: input checksums, a settings hash, the code version, and who owns an output folder.

A result is only as good as the inputs and settings it was computed from. Every prepared case (``case.json``
``provenance``), every ``ludl dosimetry`` output folder and every model artifact records a `Provenance`: the
SHA-256 of each input (a DICOM folder hashes its files by name), the settings with the SHA-256 of their canonical
JSON (`settings_hash`), and the code version (`code_version`). A job compares the record with what it would compute
now (`Provenance.differences`) and recomputes, or refuses naming ``overwrite=true``, instead of keeping a stale result.

An output folder belongs to one job and one subject (a cohort for ``ludl prepare``; a cohort, patient and cycle for
``ludl dosimetry``): `claim_output_dir` reads the folder's ``provenance.json`` and refuses a folder of another owner
(or a non-empty folder ludl did not write) unless ``overwrite=true``, in which case it first removes the outputs the
earlier owner recorded, so that no file of an earlier run stays beside the new ones. Hidden entries (Hydra's per-run
log folder ``.ludl``, temporary files of atomic writes) are never counted or removed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ludl.errors import InputError
from ludl.io.atomic import atomic_write_text
from ludl.io.manifest import Manifest, ManifestRow
from ludl.io.prepared_sidecar import to_jsonable

__all__ = [
    "DOSIMETRY_OUTPUTS",
    "OUTPUT_RECORD",
    "OUTPUT_RECORD_FORMAT",
    "Provenance",
    "canonical_json",
    "claim_output_dir",
    "code_version",
    "dataset_provenance",
    "dosimetry_owner",
    "file_sha256",
    "input_checksums",
    "manifest_provenance",
    "path_sha256",
    "read_output_record",
    "rows_sha256",
    "settings_hash",
    "source_fingerprint",
    "update_output_record",
]

OUTPUT_RECORD = "provenance.json"
OUTPUT_RECORD_FORMAT = "ludl-output-folder"
# The files `ludl dosimetry` writes in its `out` folder (`ludl.dosimetry.outputs.write_outputs`).
DOSIMETRY_OUTPUTS = (
    "dose_gy.nii.gz",
    "tia_mbq_h_per_ml.nii.gz",
    "dose_rtdose.dcm",
    "regions.csv",
    "registration.csv",
    "dvh.png",
    "summary.html",
    "summary.pdf",
)
_CHUNK_BYTES = 1 << 20  # streaming: a 2 GB CT series never sits in memory


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def path_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder (a DICOM series): its files' relative names and checksums, sorted.

    Raises:
        InputError: the path does not exist (naming it).
    """
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise InputError(f"{path}: not found; cannot record its checksum (check the manifest's path)")
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """One text for equal values: keys sorted, no spaces, NaN as null, tuples as lists, paths as strings."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the settings' canonical JSON (`canonical_json`)."""
    return hashlib.sha256(canonical_json(dict(settings)).encode("ascii")).hexdigest()


def code_version() -> str:
    """The code that computed a result: ``ludl <version>`` (a new release recomputes what it prepares)."""
    from ludl import __version__

    return f"ludl {__version__}"


def source_fingerprint(*packages: str) -> str:
    """SHA-256 (hex, 24 characters) of the source of ludl subpackages (e.g. ``"synth"``): a cache of their results is
    stale once the code that wrote it changes, whatever the version number says."""
    import ludl

    root = Path(ludl.__file__).resolve().parent
    h = hashlib.sha256()
    for package in sorted(packages):
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:24]


def input_checksums(root: str | Path, relative_paths: Sequence[str]) -> dict[str, str]:
    """Relative path (as given, POSIX) → `path_sha256` of ``root/path``, sorted by path."""
    root = Path(root)
    return {rel: path_sha256(root / rel) for rel in sorted(set(relative_paths))}


def rows_sha256(rows: Sequence[ManifestRow]) -> str:
    """SHA-256 of manifest rows as values (their line numbers left out: moving a row changes nothing)."""
    cells = [{k: v for k, v in dataclasses.asdict(r).items() if k != "line"} for r in rows]
    return hashlib.sha256(canonical_json(cells).encode("ascii")).hexdigest()


def manifest_provenance(
    manifest: Manifest,
    rows: Sequence[ManifestRow],
    settings: Mapping[str, Any],
    *,
    label: str,
    extra: Mapping[str, str] | None = None,
) -> Provenance:
    """The provenance of a result computed from these manifest rows: their image files (paths relative to the cohort,
    as the manifest gives them), ``cohort.yaml``, the rows themselves (``manifest.csv[label]``), the `extra` named
    checksums, and `settings`."""
    inputs = input_checksums(manifest.root, [r.path for r in rows])
    if (manifest.root / "cohort.yaml").is_file():
        inputs.update(input_checksums(manifest.root, ["cohort.yaml"]))
    inputs[f"manifest.csv[{label}]"] = rows_sha256(rows)
    inputs.update(extra or {})
    return Provenance.of(inputs, settings)


def dataset_provenance(prepared_dir: str | Path, settings: Mapping[str, Any]) -> Provenance:
    """The provenance of a model trained on a prepared folder: ``dataset.json``, ``splits.json`` and every case's
    ``case.json`` (which records its own inputs, so the arrays need not be hashed again), with the training settings.

    Raises:
        InputError: a file is missing (naming it).
    """
    root = Path(prepared_dir)
    names = ["dataset.json", "splits.json"]
    names += sorted(p.relative_to(root).as_posix() for p in root.glob("cases/*/case.json"))
    return Provenance.of(input_checksums(root, names), settings)


def dosimetry_owner(cohort_dir: str | Path, patient_id: str, cycle: int) -> dict[str, Any]:
    """The owner of a ``ludl dosimetry`` output folder (`claim_output_dir`): the cohort, patient and cycle."""
    return {"job": "dosimetry", "cohort": str(Path(cohort_dir).resolve()), "patient_id": patient_id, "cycle": cycle}


def _value(entries: Mapping[str, Any], key: str) -> str:
    return canonical_json(entries[key]) if key in entries else "absent"


def _flat(entries: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``dosimetry.pvc``), so that a difference names the one key that changed."""
    out: dict[str, Any] = {}
    for key, value in entries.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changed(kind: str, old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> list[str]:
    """Up to `limit` entries that differ, in words: settings with both values, inputs by name."""
    names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    text = [
        f"{kind} {k}: {_value(old, k)} → {_value(new, k)}"
        if kind == "setting"
        else f"{kind} {k} {'added' if k not in old else 'removed' if k not in new else 'changed'}"
        for k in names[:limit]
    ]
    return text + ([f"… and {len(names) - limit} more {kind}(s)"] if len(names) > limit else [])


@dataclass(frozen=True)
class Provenance:
    """What a result was computed from.

    Attributes:
        inputs: input name (a cohort-relative path, or a named table part) → SHA-256.
        settings: the settings that change the result (plain JSON values).
        settings_sha256: `settings_hash` of `settings`.
        code_version: `code_version()` of the code that computed it.
    """

    inputs: Mapping[str, str]
    settings: Mapping[str, Any]
    settings_sha256: str
    code_version: str

    @classmethod
    def of(cls, inputs: Mapping[str, str], settings: Mapping[str, Any]) -> Provenance:
        """The provenance of a result computed now, by this code, from these inputs with these settings."""
        plain = to_jsonable(dict(settings))
        return cls(dict(sorted(inputs.items())), plain, settings_hash(plain), code_version())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (inputs sorted by name)."""
        return {
            "code_version": self.code_version,
            "settings_sha256": self.settings_sha256,
            "settings": to_jsonable(dict(self.settings)),
            "inputs": dict(sorted(self.inputs.items())),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Provenance:
        """What `to_dict` wrote; raises `InputError` for anything else."""
        try:
            return cls(
                inputs={str(k): str(v) for k, v in document["inputs"].items()},
                settings=dict(document["settings"]),
                settings_sha256=str(document["settings_sha256"]),
                code_version=str(document["code_version"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise InputError(f"not a provenance record ({type(err).__name__}: {err})") from err

    def differences(self, now: Provenance) -> list[str]:
        """What differs between this (recorded) provenance and `now`, in words; empty when the result is current."""
        out: list[str] = []
        if self.code_version != now.code_version:
            out.append(f"computed by {self.code_version}, this is {now.code_version}")
        if self.settings_sha256 != now.settings_sha256:
            out += _changed("setting", _flat(self.settings), _flat(now.settings)) or ["settings hash changed"]
        if dict(self.inputs) != dict(now.inputs):
            out += _changed("input", self.inputs, now.inputs)
        return out


# ------------------------------------------------------------------------------------------------ output folders


def read_output_record(out: str | Path) -> dict[str, Any] | None:
    """The folder's ``provenance.json`` (`OUTPUT_RECORD`); None when absent.

    Raises:
        InputError: the file exists but is not a ludl output record (naming it and the fix).
    """
    file = Path(out) / OUTPUT_RECORD
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise InputError(f"{file}: cannot read ({err}); delete it or choose another out= folder") from err
    if not isinstance(document, dict) or document.get("format") != OUTPUT_RECORD_FORMAT:
        raise InputError(f"{file} is not a ludl output record; delete it or choose another out= folder")
    return document


def _describe(owner: Mapping[str, Any]) -> str:
    job = owner.get("job", "?")
    rest = ", ".join(f"{k} {v}" for k, v in owner.items() if k != "job")
    return f"`ludl {job}`" + (f" ({rest})" if rest else "")


def _few(names: Sequence[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" … (+{len(names) - limit})" if len(names) > limit else "")


def _remove_outputs(out: Path, patterns: Sequence[str]) -> list[str]:
    """Remove the top-level entries of `out` matching the earlier owner's output patterns; their names."""
    removed = []
    for entry in sorted(out.iterdir()):
        if entry.name.startswith(".") or not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


def claim_output_dir(
    out: str | Path, owner: Mapping[str, Any], *, overwrite: bool, outputs: Sequence[str]
) -> dict[str, Any] | None:
    """Make `out` this owner's output folder (created if missing); returns the earlier record of the same owner.

    Args:
        out: the output folder.
        owner: who the results belong to, plain JSON: ``{"job": "dosimetry", "cohort": …, "patient_id": …,
            "cycle": …}``. Two runs with equal owners share the folder (a rerun, a resumed run, another shard).
        overwrite: replace the results of another owner (their recorded outputs are removed first), or write into
            a non-empty folder ludl did not write.
        outputs: file-name patterns (``fnmatch``) of the top-level entries this job writes, recorded so that a later
            owner can remove exactly them.

    Returns:
        The folder's earlier record when it belongs to the same owner (its other entries, e.g. ``settings``, let the
        job check what changed); None when the folder is new, empty, or was taken over.

    Raises:
        InputError: the folder holds another owner's results, or files ludl did not write, and `overwrite` is
            false; the message names the folder, what it holds and ``overwrite=true``.
    """
    out = Path(out)
    owner = to_jsonable(dict(owner))
    if out.exists() and not out.is_dir():
        raise InputError(f"out={out} is a file, not a folder; choose a folder for the results")
    record = read_output_record(out) if out.is_dir() else None
    # Hidden entries do not count: Hydra's run logs, and the temporary file of a record another shard is writing.
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
    previous: dict[str, Any] | None = None
    if record is not None and record.get("owner") == owner:
        previous = record
    elif record is not None:
        if not overwrite:
            raise InputError(
                f"out={out} holds the results of {_describe(record.get('owner') or {})}, not of {_describe(owner)}; "
                "choose another out= folder, or pass overwrite=true to replace them"
            )
        _remove_outputs(out, [str(p) for p in record.get("outputs", ())] + [OUTPUT_RECORD])
    elif entries and not overwrite:
        raise InputError(
            f"out={out} is not empty ({_few(entries)}) and has no {OUTPUT_RECORD}: ludl did not write it (or an "
            f"older ludl did); choose a new or empty out= folder, or pass overwrite=true to write {_describe(owner)} "
            "into it"
        )
    out.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in (previous or {}).items() if k not in {"format", "owner", "outputs"}}
    document = {"format": OUTPUT_RECORD_FORMAT, "owner": owner, "outputs": sorted({*outputs, OUTPUT_RECORD}), **kept}
    atomic_write_text(out / OUTPUT_RECORD, json.dumps(document, indent=1, allow_nan=False) + "\n")
    return previous


def update_output_record(out: str | Path, **entries: Any) -> Path:
    """Add or replace entries (``settings``, ``provenance`` …) of a claimed folder's record; returns its file."""
    out = Path(out)
    record = read_output_record(out)
    if record is None:
        raise InputError(f"{out / OUTPUT_RECORD} not found: claim the folder first (`claim_output_dir`)")
    record.update(to_jsonable(entries))
    return atomic_write_text(out / OUTPUT_RECORD, json.dumps(record, indent=1, allow_nan=False) + "\n")


def is_fresh_output_dir(out: str | Path) -> bool:
    """True when `out` is missing or holds only hidden entries (Hydra's run logs): a failed run may hand it back."""
    out = Path(out)
    return not out.is_dir() or not any(not p.name.startswith(".") for p in out.iterdir())


def release_output_dir(out: str | Path) -> None:
    """Undo `claim_output_dir` on a folder the failed run found fresh: remove the record when it is the only result,
    and the folder when nothing else is in it — a run that fails leaves no output that looks like a result."""
    out = Path(out)
    visible = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if [p.name for p in visible] == [OUTPUT_RECORD]:
        visible[0].unlink()
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
