"""Training data over prepared cases: the MONAI transforms, Dataset and Lightning DataModule (to come).

The prepared-case format itself (`ludl.io.prepared`, ``dataset.json``), the splits (`ludl.io.splits`) and the cohort
readers live in `ludl.io`, so that `ludl prepare` and the dosimetry never import torch or Lightning.
"""

from __future__ import annotations
