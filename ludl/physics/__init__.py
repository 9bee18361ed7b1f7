"""Pure physics on arrays: nuclide data, TAC kinetics, single-time-point formulas, kernels, dose, radiobiology.

Modules: `nuclides` (ICRP-107 decay data), `kinetics` (`fit_tac`, `fit_voxels`), `stp` (`haenscheid_tia`,
`madsen_tia`, `PriorInformedEstimator`), `kernels` (`voxel_s_kernel`), `dose` (`dose_from_tia`, `ldm_dose`,
`density_from_hu`), `radiobiology` (BED/EQD2, DVH). Nothing here reads patient files or configuration.
"""
