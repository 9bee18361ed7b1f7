"""`write_report` on a synthetic single-scan-style content: files, self-containment, tables against the dose map."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from ludl.report import ReportContent, write_report
from ludl.report.limits import ORGAN_LIMITS, limit_for
from tests.report import synthetic
from tests.report.page_reading import images, number, shows, tables, visible_text

VOXEL_ML = float(np.prod(synthetic.SPACING_MM)) / 1000.0


@pytest.fixture(scope="module")
def content() -> ReportContent:
    return synthetic.content()


@pytest.fixture(scope="module")
def written(content: ReportContent, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(content, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(written: dict[str, Path]) -> str:
    return written["report_html"].read_text(encoding="utf-8")


def _d_x(values: np.ndarray, x_percent: float) -> float:
    """D_x by its definition: the dose the hottest x % of the voxels receive at least (k-th highest, k = ⌈x·n/100⌉)."""
    ordered = np.sort(values)[::-1]
    return float(ordered[max(math.ceil(x_percent * ordered.size / 100.0 - 1e-9), 1) - 1])


def test_files_and_self_containment(written: dict[str, Path], page: str) -> None:
    assert written["report_html"].name == "report.html"
    assert written["report_pdf"].read_bytes()[:5] == b"%PDF-"
    pngs = images(page)
    assert len(pngs) == 4  # MIPs, dose on CT, time-activity curves, DVHs
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs)
    stripped = re.sub(r'src="data:image/png;base64,[^"]*"', "", page)
    assert not re.search(r"https?://|<link|<script|@import|url\(|src=\"(?!data:)", stripped)


def test_no_scientific_notation_no_nan_no_code_names(page: str) -> None:
    text = visible_text(page)
    assert not re.search(r"\d[eE][+-]?\d", text), "scientific notation on the page"
    assert "nan" not in text.lower().split()
    for code in ("mean_dose_uncorrected_gy", "pvc_factor", "bed_gy", "t_eff_h", "volume_ml", "d2_gy"):
        assert code not in text


def test_pseudonym_only(tmp_path: Path) -> None:
    files = write_report(synthetic.content(label=synthetic.PSEUDONYM), tmp_path, pdf=False)
    page = files["report_html"].read_text(encoding="utf-8")
    assert synthetic.PSEUDONYM in page
    assert synthetic.PATIENT_ID not in page and "DOE" not in visible_text(page)
    assert set(files) == {"report_html"}


def test_warnings_box_comes_first(page: str) -> None:
    box = page.index("class=warnings")
    assert box < page.index("<img") and box < page.index("Organs at risk")
    for needle in ("Scan time", "spill-in", "outside the field of view"):
        assert needle in page[box : page.index("class=findings")]


def test_lesion_table_equals_the_dose_map(page: str, content: ReportContent) -> None:
    dose, labels, names, _ = synthetic.maps()
    value_of = {n: v for v, n in names.items()}
    rows = tables(page)["Lesions, highest dose first"]
    head, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(head)}
    shown_means = []
    for row in body:
        name = f"lesion_{int(row[0].split()[1]):03d}"
        voxels = dose[labels == value_of[name]].astype(np.float64)
        assert shows(row[col["Volume (mL)"]], voxels.size * VOXEL_ML)
        if name in synthetic.UNSCORED:
            assert row[2].startswith("not scored") and len(row) == 3  # no dose, no half-life
            continue
        shown_means.append(number(row[col["Mean dose (Gy)"]]))
        assert shows(row[col["Voxel mean dose (Gy)"]], voxels.mean())
        for x in (2, 50, 98):
            assert shows(row[col[f"D{x} (Gy)"]], _d_x(voxels, x)), (name, x)
        mean = number(row[col["Mean dose (Gy)"]])
        assert number(row[col["Dose per activity (Gy/GBq)"]]) == pytest.approx(
            mean / (synthetic.INJECTED_MBQ / 1000), abs=0.01
        )
    assert shown_means == sorted(shown_means, reverse=True)
    assert body[-1][0] == "Lesion 4"  # the unscored one last


def test_headline_covers_scored_lesions_only(page: str) -> None:
    dose, labels, names, _ = synthetic.maps()
    scored = [(v, n) for v, n in names.items() if n.startswith("lesion") and n not in synthetic.UNSCORED]
    volumes = np.array([np.count_nonzero(labels == v) * VOXEL_ML for v, _ in scored])
    means = np.array([1.25 * dose[labels == v].astype(np.float64).mean() for v, _ in scored])  # synthetic: ×1.25 PVC
    expected = float(np.sum(means * volumes) / np.sum(volumes))
    all_ml = sum(np.count_nonzero(labels == v) * VOXEL_ML for v, n in names.items() if n.startswith("lesion"))
    match = re.search(r"Whole-body tumour dose ([\d.]+) Gy: volume-weighted mean dose of (\d+) of (\d+) lesions "
                      r"\(([\d.]+) of ([\d.]+) mL\)", page)  # fmt: skip
    assert match is not None
    assert float(match[1]) == pytest.approx(expected, abs=0.051)
    assert (int(match[2]), int(match[3])) == (3, 4)
    assert float(match[4]) == pytest.approx(volumes.sum(), abs=0.051)
    assert float(match[5]) == pytest.approx(all_ml, abs=0.051)


def test_organ_table_limits_and_shares(page: str) -> None:
    dose, labels, names, _ = synthetic.maps()
    rows = tables(page)["Organs at risk"]
    col = {name: i for i, name in enumerate(rows[0])}
    by_label = {r[0]: r for r in rows[1:]}
    kidney = by_label["Kidney, left"]
    voxels = dose[labels == next(v for v, n in names.items() if n == "kidney_left")].astype(np.float64)
    assert shows(kidney[col["Mean dose (Gy)"]], voxels.mean())
    bed = number(kidney[col["BED (Gy)"]])
    # BED of a mono-exponential dose rate (Dale): D(1 + D·λ/(λ+μ)/(α/β)), kidney α/β 2.6 Gy, T_rep 2.8 h, T_eff 38 h.
    lam, mu = math.log(2) / 38.0, math.log(2) / 2.8
    assert shows(kidney[col["BED (Gy)"]], voxels.mean() * (1 + voxels.mean() * lam / (lam + mu) / 2.6))
    assert kidney[col["Tolerance limit"]] == "BED 40 Gy"
    assert number(kidney[col["Share of limit this cycle"]]) == pytest.approx(100 * bed / 40.0, abs=0.51)
    parotid = by_label["Parotid gland, left"]
    assert parotid[col["Tolerance limit"]] == "mean 25 Gy"
    assert number(parotid[col["Share of limit this cycle"]]) == pytest.approx(
        100 * number(parotid[col["Mean dose (Gy)"]]) / 25.0, abs=0.6
    )
    assert by_label["Liver"][col["Tolerance limit"]] == "–"


def test_limits_live_in_one_place() -> None:
    assert {limit.group for limit in ORGAN_LIMITS} == {"kidneys", "salivary glands", "red marrow"}
    kidney = limit_for("kidney_right")
    assert kidney is not None and (kidney.quantity, kidney.limit_gy) == ("bed", 40.0)
    assert limit_for("liver") is None and limit_for("lesion_001") is None
    docs = (Path(__file__).resolve().parents[2] / "docs" / "report.md").read_text(encoding="utf-8")
    for limit in ORGAN_LIMITS:  # every limit is cited in docs/report.md
        author, year = re.findall(r"([A-Z][a-z]+) (\d{4})", limit.source)[0]
        assert f"{limit.limit_gy:g} Gy" in docs and re.search(rf"{author} [^|]*{year}", docs), limit


def test_pdf_without_a_browser_is_drawn_by_matplotlib(
    content: ReportContent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for browser in ("/nonexistent/chromium", "/bin/false"):  # missing, and present but failing
        monkeypatch.setenv("LUDL_CHROMIUM", browser)
        out = tmp_path / Path(browser).name
        files = write_report(content, out)
        pdf = files["report_pdf"].read_bytes()
        assert pdf[:5] == b"%PDF-" and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 4
        assert files["report_html"].is_file()


def test_a_bare_content_still_renders(tmp_path: Path) -> None:
    """No CT, PET, curves, lesions, response or warnings: the page says what it has and nothing breaks."""
    from dataclasses import replace

    full = synthetic.content()
    organs = tuple(r for r in full.regions if r.kind != "lesion" and r.name != "kidney_left")
    pictures = replace(full.images, ct_hu=None, pet_suv=None, label_names={**full.images.label_names, 99: "spleen"})
    bare = replace(full, regions=organs, images=pictures, curves=(), response=None, warnings=(), notes=())
    page = write_report(bare, tmp_path, pdf=False)["report_html"].read_text(encoding="utf-8")
    assert "No lesions in the label map." in page and "class=warnings" in page  # the red-marrow caution
    assert "Lesions, highest dose first" not in page and "Time–activity curves" not in page
    assert len(images(page)) == 3  # dose MIP, kidney slices, DVHs
