"""Hydra configs of the `ludl` jobs, shipped as package data (``pkg://ludl.configs``).

One primary config per job (``synth.yaml``, ``validate.yaml``, ``dosimetry.yaml``, ``prepare.yaml``,
``phantom.yaml``) and the groups they compose: ``paths/`` (output root, kernel cache), ``dosimetry/`` (the
`DosimetryOptions` of ``dosimetry`` and ``prepare``), ``preset/`` (synthetic-cohort sizes, also read by
`ludl.synth.presets`) and ``hydra/`` (run folders, logging, launchers). The YAML files hold every default and its
comment; `ludl.configs.schema` holds the types.
"""
