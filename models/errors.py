"""The one error the artifact code raises."""

from pathlib import Path


class ArtifactError(Exception):
    """An artifact could not be used; ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
