"""The clinician page: a static, dependency-free front end that talks only to the public API."""
