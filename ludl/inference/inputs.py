"""What one single-scan prediction needs, on the SPECT's grid: `ScanInputs`, from `Volume`s or from files.

The SPECT (Bq/mL) is the reference: its CT becomes mass density on the SPECT grid (as `ludl prepare` does), the
pre-therapy PET is registered to the SPECT/CT through its own CT (rigid, `ludl.imaging.register_rigid`, body
centroids first: another day, another scanner) and resampled conserving ∫ SUV dV. Scan time and injected activity
come from the DICOM headers where they are present; values given by the caller win and are recorded as such.

Bad input is refused with the file and the fix (never a silent wrong dose): images of different patients, a PET
whose CT cannot be registered to the SPECT's CT, a SPECT without a time stamp and no ``time_h``, no injected
activity, a SPECT in counts without calibration, a truncated series.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ludl.errors import GeometryError, InputError, LudlError, UnitsError
from ludl.imaging.resample import resample_to
from ludl.imaging.volume import Volume
from ludl.io.regions import region_kind
from ludl.physics.units import BQ_PER_MBQ

__all__ = [
    "ReferenceLabels",
    "ScanInputs",
    "file_checksums",
    "read_scan_inputs",
    "scan_inputs",
]

_NIFTI = (".nii", ".nii.gz")


@dataclass(frozen=True, eq=False)
class ReferenceLabels:
    """A reference label map on the SPECT grid (the clinic's contours, or a prepared case's regions).

    Attributes:
        labels: integer map on the SPECT grid; values: region name → value; kinds: region name → kind.
    """

    labels: Volume
    values: Mapping[str, int]
    kinds: Mapping[str, str]


@dataclass(frozen=True, eq=False)
class ScanInputs:
    """One scan's inputs on the SPECT grid, and where each value came from.

    Attributes:
        spect: activity concentration (Bq/mL) — the reference grid of every output.
        density: mass density (g/mL) on the SPECT grid.
        suv: pre-therapy PET SUV on the SPECT grid (None without a PET: the network then sees zeros).
        time_h: scan time after injection, h; injected_mbq: net administered activity, MBq.
        fwhm_mm: the SPECT's reconstructed resolution (for the single-scan partial-volume correction; None: none).
        ct_hu: the SPECT's CT on the SPECT grid (for the report); None when built from density.
        reference_labels: optional reference regions scored beside the network's.
        sources: value → where it came from (``"DICOM"``, ``"command line"``, ``"cohort manifest"`` …).
        warnings: what the report's warning box must show.
        registration: the PET registration's quality (None without a PET).
        patient_id: the DICOM PatientID (written only when identifiers are asked for).
        scan_date: ISO date of the SPECT ("" when unknown).
        checksums: input file → SHA-256.
        dicom_reference: the SPECT's DICOM file or folder (RT Dose and SEG reference it), None for NIfTI.
    """

    spect: Volume
    density: Volume
    suv: Volume | None
    time_h: float
    injected_mbq: float
    fwhm_mm: float | None = None
    ct_hu: Volume | None = None
    reference_labels: ReferenceLabels | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    registration: Mapping[str, Any] | None = None
    patient_id: str | None = None
    scan_date: str = ""
    checksums: Mapping[str, str] = field(default_factory=dict)
    dicom_reference: Path | None = None

    def with_warning(self, text: str) -> ScanInputs:
        """The same inputs with one more warning."""
        return replace(self, warnings=(*self.warnings, text))


def _check_number(value: float | None, name: str, fix: str) -> float:
    if value is None or not math.isfinite(float(value)) or float(value) <= 0:
        raise InputError(f"{name} is {value!r}: {fix}")
    return float(value)


def register_pet(spect_ct: Volume, pet_suv: Volume, pet_ct: Volume, where: str) -> tuple[Volume, dict[str, Any]]:
    """The PET (SUV) on the SPECT grid through its CT registered to the SPECT's CT, and the registration's quality.

    Raises:
        GeometryError: the two CTs share no anatomy (another patient, an empty or wrong series).
    """
    from ludl.imaging.registration import register_rigid

    try:
        result = register_rigid(spect_ct, pet_ct, initial="body")
    except LudlError as err:
        raise GeometryError(
            f"{where}: the PET's CT cannot be registered to the SPECT's CT ({err}): is it this patient's PET/CT? Give "
            "the PET/CT of the same patient (pet=, pet_ct=) or leave the PET out"
        ) from err
    q = result.quality
    if not (math.isfinite(q.correlation) and q.correlation >= 0.5) or q.overlap_fraction < 0.5:
        raise GeometryError(
            f"{where}: the PET's CT does not match the SPECT's CT after registration (HU correlation "
            f"{q.correlation:.2f}, body overlap {100 * q.overlap_fraction:.0f} %): is it this patient's PET/CT? Give "
            "the PET/CT of the same patient (pet=, pet_ct=) or leave the PET out"
        )
    info = {
        "translation_mm": [float(v) for v in result.translation_mm],
        "rotation_deg": [float(v) for v in result.rotation_deg],
        "hu_correlation": float(q.correlation),
        "mean_abs_diff_hu": float(q.mean_abs_diff_hu),
        "flags": list(q.reasons),
        "ok": bool(q.ok),
    }
    return resample_to(pet_suv, spect_ct, kind="activity", transform=result.transform), info


def scan_inputs(
    spect: Volume,
    ct: Volume,
    *,
    time_h: float | None,
    injected_mbq: float | None,
    pet: Volume | None = None,
    pet_ct: Volume | None = None,
    fwhm_mm: float | None = None,
    reference_labels: ReferenceLabels | None = None,
    sources: Mapping[str, str] | None = None,
    warnings: Sequence[str] = (),
) -> ScanInputs:
    """`ScanInputs` from volumes: SPECT (Bq/mL or MBq/mL), its CT (HU), optionally the PET (SUV) with its CT (HU).

    Raises:
        InputError: no scan time or activity; UnitsError: a SPECT not in activity concentration;
        GeometryError: a PET whose CT does not register to the SPECT's CT.
    """
    from ludl.physics.dose import density_from_hu

    if spect.unit == "MBq/mL":
        spect = spect.with_array(np.asarray(spect.array, dtype=np.float32) * np.float32(BQ_PER_MBQ), unit="Bq/mL")
    if spect.unit != "Bq/mL":
        raise UnitsError(
            f"the SPECT is in {spect.unit!r}: ludl needs activity concentration (Bq/mL); give a quantitative "
            "reconstruction, or for counts the calibration (sensitivity_cps_per_mbq=, acquisition_s=)"
        )
    if ct.unit != "HU":
        raise UnitsError(f"the CT is in {ct.unit!r}, not HU; give the SPECT/CT's CT series")
    time = _check_number(time_h, "time_h", "give the scan time after injection in hours (time_h=24)")
    activity = _check_number(injected_mbq, "injected_mbq", "give the net injected activity in MBq (injected_mbq=7400)")
    if not np.isfinite(np.asarray(spect.array)).all():
        raise InputError("the SPECT holds NaN or infinite values; re-export the reconstruction")
    hu = ct if ct.same_grid(spect) else resample_to(ct, spect, kind="linear", default=-1000.0)
    density = np.asarray(density_from_hu(np.asarray(hu.array, dtype=np.float64)), dtype=np.float32)
    suv, registration = None, None
    notes = list(warnings)
    if pet is not None:
        if pet_ct is None:
            raise InputError("a PET needs its CT to be registered to the SPECT/CT: give pet_ct= (or leave pet= out)")
        pet_suv = pet.with_array(np.nan_to_num(np.asarray(pet.array, dtype=np.float32)))
        suv, registration = register_pet(ct, pet_suv, pet_ct, "PET")
        suv = suv if suv.same_grid(spect) else resample_to(suv, spect, kind="activity")
        if not registration["ok"]:
            notes.append("PET registration is poor: " + "; ".join(registration["flags"]))
    else:
        notes.append("no PET given: the network saw no PSMA PET (trained with one); lesion detection is weaker")
    return ScanInputs(
        spect=spect,
        density=spect.with_array(density, unit="g/mL"),
        suv=suv,
        time_h=time,
        injected_mbq=activity,
        fwhm_mm=fwhm_mm,
        ct_hu=hu.with_array(np.asarray(hu.array, dtype=np.float32)),
        reference_labels=reference_labels,
        sources=dict(sources or {}),
        warnings=tuple(notes),
        registration=registration,
    )


# ------------------------------------------------------------------------------------------------ files


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI)


def file_checksums(paths: Mapping[str, Path | None]) -> dict[str, str]:
    """Role → SHA-256 of the input file (a folder: of its files' contents in name order)."""
    out: dict[str, str] = {}
    for role, path in paths.items():
        if path is None:
            continue
        digest = hashlib.sha256()
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            digest.update(file.read_bytes())
        out[role] = digest.hexdigest()
    return out


def _header(path: Path) -> Any:
    import pydicom

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        try:
            return pydicom.dcmread(file, stop_before_pixels=True)
        except Exception:  # non-DICOM files beside a series (DICOMDIR, notes) are skipped on purpose
            continue
    return None


def _dicom_time_and_activity(header: Any) -> tuple[float | None, float | None, str]:
    """(hours from injection to acquisition start, injected MBq, ISO scan date) from an NM header."""
    from ludl.io.dicom_tags import parse_dicom_datetime

    if header is None:
        return None, None, ""
    start = parse_dicom_datetime(
        header.get("AcquisitionDate") or header.get("SeriesDate"),
        header.get("AcquisitionTime") or header.get("SeriesTime"),
        header.get("AcquisitionDateTime"),
    )
    items = list(header.get("RadiopharmaceuticalInformationSequence") or [])
    injection: dt.datetime | None = None
    activity = None
    if items:
        item = items[0]
        injection = parse_dicom_datetime(
            header.get("AcquisitionDate") or header.get("SeriesDate"),
            item.get("RadiopharmaceuticalStartTime"),
            item.get("RadiopharmaceuticalStartDateTime"),
        )
        dose = item.get("RadionuclideTotalDose")
        activity = float(dose) / BQ_PER_MBQ if dose not in (None, "") and float(dose) > 0 else None
    time_h = None
    if start is not None and injection is not None:
        time_h = (start.replace(tzinfo=None) - injection.replace(tzinfo=None)).total_seconds() / 3600.0
    return time_h, activity, start.date().isoformat() if start is not None else ""


def _check_same_patient(headers: Mapping[str, tuple[Path, Any]]) -> str | None:
    """The one PatientID of the DICOM inputs; raises when two inputs name different patients."""
    seen: dict[str, tuple[str, Path]] = {}
    for role, (path, header) in headers.items():
        pid = str(header.get("PatientID", "") or "") if header is not None else ""
        if pid:
            seen.setdefault(pid, (role, path))
    if len(seen) > 1:
        (a, (ra, pa)), (b, (rb, pb)) = list(seen.items())[:2]
        raise InputError(
            f"{ra}={pa} has PatientID {a!r} but {rb}={pb} has {b!r}: images of two patients; give the scans of one "
            "patient"
        )
    return next(iter(seen), None)


def _read_spect(
    path: Path, beds: Sequence[Path], sensitivity_cps_per_mbq: float | None, acquisition_s: float | None
) -> Volume:
    from ludl.io.nifti import read_nifti
    from ludl.io.nm import read_nm

    if len(beds) > 1:  # bed positions of one scan, stitched along z by the NM reader
        try:
            return read_nm(list(beds), sensitivity_cps_per_mbq=sensitivity_cps_per_mbq, acquisition_s=acquisition_s)
        except UnitsError as err:
            raise UnitsError(
                f"spect={path}: {err}; for a SPECT in counts give sensitivity_cps_per_mbq= and acquisition_s="
            ) from err
    if _is_nifti(path):
        volume = read_nifti(path)
        if volume.unit not in ("Bq/mL", "MBq/mL"):
            raise UnitsError(
                f"{path}: NIfTI SPECT in {volume.unit!r}; ludl needs Bq/mL (write the unit into the NIfTI description "
                "as ludl does, or give the DICOM NM series)"
            )
        return volume
    try:
        return read_nm(path, sensitivity_cps_per_mbq=sensitivity_cps_per_mbq, acquisition_s=acquisition_s)
    except UnitsError as err:
        raise UnitsError(
            f"spect={path}: {err}; for a SPECT in counts give sensitivity_cps_per_mbq= and acquisition_s="
        ) from err


def _read_image(path: Path, role: str, unit: str) -> Volume:
    from ludl.io.ct import read_ct
    from ludl.io.nifti import read_nifti
    from ludl.io.pet import read_pet

    if _is_nifti(path):
        volume = read_nifti(path)
        if volume.unit != unit:
            raise UnitsError(f"{role}={path} is in {volume.unit!r}; ludl needs {unit} here")
        return volume
    return read_ct(path) if unit == "HU" else read_pet(path)


def read_reference_labels(path: Path, grid: Volume, names: Mapping[str, int] | None = None) -> ReferenceLabels:
    """A reference label map (RTSTRUCT, SEG or NIfTI) on the SPECT grid, regions present on it only.

    `names`: region name → label value (a NIfTI map's names, e.g. cohort.yaml ``labels``); RTSTRUCT and SEG
    structures are matched by name. Without it a NIfTI map's values are named ``label_<value>``.
    """
    from ludl.io.labels import read_labels

    volume, names = read_labels(path, grid, names=dict(names) if names else None)
    if not volume.same_grid(grid):
        volume = resample_to(volume, grid, kind="nearest")
    present = set(np.unique(np.asarray(volume.array)).tolist())
    names = {n: v for n, v in names.items() if v in present and v != 0}
    if not names:
        raise InputError(f"labels={path}: none of its regions lies on the SPECT grid; check that it is this scan's")
    kinds = {}
    for name in names:
        try:
            kinds[name] = region_kind(name)
        except LudlError:
            kinds[name] = "organ"
    return ReferenceLabels(volume, dict(names), kinds)


def read_scan_inputs(
    spect: str | Path | Sequence[str | Path],
    ct: str | Path,
    *,
    pet: str | Path | None = None,
    pet_ct: str | Path | None = None,
    time_h: float | None = None,
    injected_mbq: float | None = None,
    fwhm_mm: float | None = None,
    labels: str | Path | None = None,
    label_names: Mapping[str, int] | None = None,
    sensitivity_cps_per_mbq: float | None = None,
    acquisition_s: float | None = None,
) -> ScanInputs:
    """`ScanInputs` from files: DICOM folders (NM, CT, PT, CT) or NIfTI; values from the call win over DICOM's.

    `spect` may list the bed positions of one scan (DICOM NM folders or files), stitched by `ludl.io.read_nm`.

    Raises:
        InputError, DicomError, UnitsError, GeometryError: each naming the file or flag and the fix.
    """
    beds = [Path(spect)] if isinstance(spect, str | Path) else [Path(b) for b in spect]
    if not beds:
        raise InputError("spect= is empty: give the SPECT series folder (or a list of its bed folders)")
    spect_path, ct_path = beds[0], Path(ct)
    paths = {"spect": spect_path, "ct": ct_path, "pet": _path(pet), "pet_ct": _path(pet_ct), "labels": _path(labels)}
    for role, path in paths.items():
        if path is not None and not path.exists():
            raise InputError(f"{role}={path}: no such file or folder; check the path")
    headers = {role: (path, _header(path)) for role, path in paths.items() if path is not None and not _is_nifti(path)}
    headers.pop("labels", None)
    patient_id = _check_same_patient(headers)
    dicom_time, dicom_activity, date = _dicom_time_and_activity(headers.get("spect", (None, None))[1])
    sources: dict[str, str] = {}
    if time_h is not None:
        sources["time_h"] = "command line" + (f" (DICOM says {dicom_time:.2f} h)" if dicom_time is not None else "")
    elif dicom_time is not None:
        time_h, sources["time_h"] = dicom_time, "DICOM"
    else:
        raise InputError(
            f"spect={paths['spect']}: no acquisition and injection time stamps to compute the scan time; give "
            "time_h= (hours after injection)"
        )
    if injected_mbq is not None:
        sources["injected_mbq"] = "command line" + (
            f" (DICOM says {dicom_activity:.0f} MBq)" if dicom_activity is not None else ""
        )
    elif dicom_activity is not None:
        injected_mbq, sources["injected_mbq"] = dicom_activity, "DICOM"
    else:
        raise InputError(
            f"spect={paths['spect']}: no injected activity (RadionuclideTotalDose) in the DICOM header; give "
            "injected_mbq= (net administered MBq)"
        )
    for bed in beds[1:]:
        if not bed.exists():
            raise InputError(f"spect={bed}: no such file or folder; check the path")
    spect_volume = _read_spect(spect_path, beds, sensitivity_cps_per_mbq, acquisition_s)
    ct_volume = _read_image(ct_path, "ct", "HU")
    pet_volume = _read_image(paths["pet"], "pet", "SUV") if paths["pet"] is not None else None
    pet_ct_volume = _read_image(paths["pet_ct"], "pet_ct", "HU") if paths["pet_ct"] is not None else None
    reference = (
        read_reference_labels(paths["labels"], spect_volume, label_names) if paths["labels"] is not None else None
    )
    built = scan_inputs(
        spect_volume,
        ct_volume,
        time_h=time_h,
        injected_mbq=injected_mbq,
        pet=pet_volume,
        pet_ct=pet_ct_volume,
        fwhm_mm=fwhm_mm,
        reference_labels=reference,
        sources=sources,
    )
    return replace(
        built,
        patient_id=patient_id,
        scan_date=date,
        checksums=file_checksums({**paths, **{f"spect_bed{i + 1}": b for i, b in enumerate(beds[1:])}}),
        dicom_reference=None if _is_nifti(spect_path) else spect_path,
    )


def _path(value: str | Path | None) -> Path | None:
    return None if value is None or str(value) in ("", "None", "null") else Path(value)
