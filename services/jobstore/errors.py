"""Domain errors of the jobstore. The gRPC layer maps each to one status code (service.py)."""

from __future__ import annotations


class JobStoreError(Exception):
    """Base class; the message is safe to show to the caller."""


class InvalidArgument(JobStoreError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(JobStoreError):
    pass


class FailedPrecondition(JobStoreError):
    pass


class Unavailable(JobStoreError):
    pass
