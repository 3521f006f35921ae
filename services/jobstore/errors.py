"""Domain errors of the jobstore. The gRPC layer maps each to one status code (service.py)."""

from __future__ import annotations

import asyncpg

# What a lost, stopping or restarting database raises, at any point of a call: network errors, the
# server's own errors, asyncpg's errors of a closed connection, and its InternalClientError for a
# connection terminated in the middle of an operation ("cannot switch to state ..."), which once
# killed the event dispatcher's loop during a Postgres restart. Background loops catch these and retry.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                   asyncpg.InternalClientError)
# The part of those that means "the database is away" rather than "this statement is wrong": a call that
# meets one is UNAVAILABLE (try again), never INTERNAL.
DATABASE_DOWN = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                 asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError)


class JobStoreError(Exception):
    """Base class; the message is safe to show to the caller."""


class InvalidArgument(JobStoreError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(JobStoreError):
    pass


class FailedPrecondition(JobStoreError):
    pass


class Unavailable(JobStoreError):
    pass
