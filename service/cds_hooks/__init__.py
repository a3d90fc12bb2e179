"""CDS Hooks for EHRs: the hook service and the FHIR extraction it reads patients with.

- :mod:`service.cds_hooks.router`: discovery, the ``patient-view`` hook and feedback (FastAPI).
- :mod:`service.cds_hooks.fhir`: prefetched FHIR R4 resources -> model features, pure Python
  (no FastAPI), so it can be used and tested on its own.
"""
