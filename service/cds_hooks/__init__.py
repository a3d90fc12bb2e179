"""CDS Hooks for EHRs: the hook service and the FHIR extraction it reads patients with.

- :mod:`service.cds_hooks.router`: discovery, the ``patient-view`` hook and feedback (HTTP only).
- :mod:`service.cds_hooks.hook`: what a hook call, its prefetch and a feedback must hold.
- :mod:`service.cds_hooks.fhir`: prefetched FHIR R4 resources -> model features, pure Python.
- :mod:`service.cds_hooks.cards`: the card (risk, drivers, data used, or why not computed).
"""
