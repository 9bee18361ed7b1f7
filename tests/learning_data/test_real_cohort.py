"""The data module on what `ludl synth preset=tiny` + `ludl prepare` really write (three patients, five scans)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ludl.data import PreparedDataModule
from ludl.dosimetry.options import DosimetryOptions
from ludl.dosimetry.prepare import run_prepare
from ludl.synth.cohort import run_synth


@pytest.mark.slow
def test_batches_from_a_prepared_synthetic_cohort(tmp_path: Path) -> None:
    cohort, prepared = tmp_path / "cohort", tmp_path / "prepared"
    run_synth("tiny", 3, 5, cohort, workers=1)
    run_prepare(cohort, prepared, workers=1, options=DosimetryOptions(kernel_cache_dir=tmp_path / "kernels"))
    dm = PreparedDataModule(prepared, batch_size=2, patch_size_zyx=(32, 32, 32), samples_per_epoch=12, augment=False)
    batches = list(dm.train_dataloader())
    drawn = {float(t) for b in batches for t in b["timepoint_h"]}
    assert len(drawn) >= 3  # one time point per sample, drawn among the case's five
    for b in batches:
        for j, case_id in enumerate(b["case_id"]):
            case = prepared / "cases" / case_id
            sidecar = json.loads((case / "case.json").read_text())
            t = float(b["timepoint_h"][j])
            folder = next(e["folder"] for e in sidecar["timepoints"] if e["timepoint_h"] == t)
            spect = np.load(case / folder / "spect_bq_per_ml.npy")
            z, y, x = (int(v) for v in b["patch_start_zyx"][j])
            if min(z, y, x) >= 0 and all(a + 32 <= n for a, n in zip((z, y, x), spect.shape, strict=True)):
                np.testing.assert_allclose(
                    b["activity_mbq_per_ml"][j, 0].numpy(), spect[z : z + 32, y : y + 32, x : x + 32] * 1e-6, rtol=1e-6
                )
            assert float(b["injected_gbq"][j]) == pytest.approx(sidecar["net_administered_mbq"] / 1000.0, rel=1e-6)
            rows = {
                sidecar["region_values"][r["region"]]: r["mean_dose_gy"]
                for r in sidecar["regions"]
                if r["region"] in sidecar["region_values"]
            }
            for value, dose in zip(b["region_values"][j].tolist(), b["region_dose_gy"][j].tolist(), strict=True):
                if value:  # regions without ground truth (null in the sidecar) are never listed
                    assert rows[value] is not None and dose == pytest.approx(rows[value], rel=1e-6)
    volume = next(iter(dm.val_dataloader()))
    assert volume["valid"].equal(volume["gt_fov"]) and volume["dose_gy"][volume["gt_fov"]].max() > 0
    assert int((volume["region_values"] > 0).sum()) >= 4  # kidneys, liver, spleen … wholly inside their own volume
