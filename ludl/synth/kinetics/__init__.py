"""Whole-body compartment kinetics of 177Lu-PSMA for one synthetic patient-cycle, normalised to the injection.

Model (docs/synthetic-cohort.md "Whole-body activity balance"): a mammillary system around the blood pool.
Every peripheral
compartment j (interstitial fluid, kidneys, salivary and lacrimal glands, liver, spleen, bowel, red marrow,
rest of body, one per lesion) takes activity up from blood at rate a_j and returns it at rate b_j; blood
loses activity to the bladder at the renal rate k_u, the bowel to the faeces at rate l. The bladder is voided
at random times. All activity decays physically, so A(t) = e^{−λt} · (biological amounts), and activity in
the body plus what was excreted equals the injected activity decayed (by construction, to rounding).

Exact solution: the biological rate matrix K of a mammillary system with reversible exchanges satisfies
detailed balance, so D^{−1/2} K D^{1/2} is symmetric (D = diag(1, a_j/b_j)); its eigen-decomposition gives the
amounts as sums of exponentials, vectorised over any time grid, and the integrals in closed form. The bladder
between voids holds the urine made since the last void (plus the residual), which follows from the cumulative
renal outflow, itself a closed-form integral of the blood curve.

Region uptake rates are set so that a reference patient (all factors 1, reference tumour volume) receives
exactly the median organ dose per GBq of the priors and the median lesion dose; every patient then draws
T_eff = median × shared patient factor × region factor, uptake = median × region factor (× organ or lesion
volume), and the doses emerge, tumour sink included: more tumour uptake leaves less blood activity for the
organs. Only the self-dose of each region is counted (TIA × sphere S value of its volume).

Effective half-life of a region (`PatientKinetics.t_eff_h`): ln2 × (TIA after the peak) / (peak activity),
the half-life of the mono-exponential that starts at the peak with the same post-peak integral. It equals the
washout half-life for a mono-exponential washout and, unlike a two-point terminal slope, does not depend on
the scan times; recirculation of released activity lengthens it slightly. Capped at the physical half-life.

Lesion uptake phase (`LesionPrior.uptake_peak_h_range`, off by default): each lesion is then fed through a
delivery pool of its own (blood ⇄ pool ⇄ lesion). Exchanges on any tree keep detailed balance, so the same
symmetrised eigen-decomposition and a closed-form TIA hold (`CompartmentRates.parent`); the pools have no row of
their own and are counted in ``rest_of_body``.

Modules: `rates` (rate constants, closed-form TIA, next-cycle perturbation), `reference` (the calibrated
reference patient), `curves` (`PatientKinetics`, the exact curves) and `sampling` (patients, lesions, voids).
"""

from __future__ import annotations

from ludl.synth.kinetics.curves import PatientKinetics
from ludl.synth.kinetics.rates import CompartmentRates, closed_form_tia_h, perturb_rates, release_rate_per_h
from ludl.synth.kinetics.reference import TUMOUR_CLASS, ReferenceModel, reference_model, reference_rates
from ludl.synth.kinetics.sampling import (
    Lesions,
    patient_rng,
    sample_lesions,
    sample_next_cycle_kinetics,
    sample_patient_kinetics,
    sample_pet_lesion_factor,
    sample_voids,
    tumour_sink_log_factor,
)
from ludl.synth.kinetics.uptake_phase import uptake_rate_for_peak_per_h

__all__ = [
    "TUMOUR_CLASS",
    "CompartmentRates",
    "Lesions",
    "PatientKinetics",
    "ReferenceModel",
    "closed_form_tia_h",
    "patient_rng",
    "perturb_rates",
    "reference_model",
    "reference_rates",
    "release_rate_per_h",
    "sample_lesions",
    "sample_next_cycle_kinetics",
    "sample_patient_kinetics",
    "sample_pet_lesion_factor",
    "sample_voids",
    "tumour_sink_log_factor",
    "uptake_rate_for_peak_per_h",
]
