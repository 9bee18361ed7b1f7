"""Pure physics on arrays: nuclide data, TAC kinetics, single-time-point formulas, kernels, dose, radiobiology.

Modules: `nuclides` (ICRP-107 decay data), `kinetics` (`fit_tac`, `fit_voxels`; private helpers `_tac_*`,
`_fit_*`, `_voxel_fit`), `stp` (`haenscheid_tia`, `madsen_tia`, `PriorInformedEstimator`), `kernels`
(`voxel_s_kernel`, built on `point_kernel` — dose point kernel, sphere S values — and `kernel_data` — tables,
media), `dose` (`dose_from_tia`, `ldm_dose`, `density_from_hu`), `radiobiology` (BED/EQD2, DVH), `units` (Bq/MBq,
SUVbw). Nothing here reads patient files or configuration.
"""
