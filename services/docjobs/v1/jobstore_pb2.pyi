import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_PENDING: _ClassVar[JobStatus]
    JOB_STATUS_PROCESSING: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]

class JobView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_VIEW_UNSPECIFIED: _ClassVar[JobView]
    JOB_VIEW_FULL: _ClassVar[JobView]
    JOB_VIEW_BASIC: _ClassVar[JobView]

class WatchMarker(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_MARKER_UNSPECIFIED: _ClassVar[WatchMarker]
    WATCH_MARKER_SUBSCRIBED: _ClassVar[WatchMarker]
    WATCH_MARKER_FINISHED: _ClassVar[WatchMarker]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_STATUS: _ClassVar[EventKind]
    EVENT_KIND_PROGRESS: _ClassVar[EventKind]
    EVENT_KIND_COMPLETED: _ClassVar[EventKind]
    EVENT_KIND_FAILED: _ClassVar[EventKind]
    EVENT_KIND_CANCELLED: _ClassVar[EventKind]

class DeliveryOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_OUTCOME_UNSPECIFIED: _ClassVar[DeliveryOutcome]
    DELIVERY_OUTCOME_DELIVERED: _ClassVar[DeliveryOutcome]
    DELIVERY_OUTCOME_RETRY: _ClassVar[DeliveryOutcome]
    DELIVERY_OUTCOME_GAVE_UP: _ClassVar[DeliveryOutcome]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_PROCESSING: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELLED: JobStatus
JOB_VIEW_UNSPECIFIED: JobView
JOB_VIEW_FULL: JobView
JOB_VIEW_BASIC: JobView
WATCH_MARKER_UNSPECIFIED: WatchMarker
WATCH_MARKER_SUBSCRIBED: WatchMarker
WATCH_MARKER_FINISHED: WatchMarker
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_STATUS: EventKind
EVENT_KIND_PROGRESS: EventKind
EVENT_KIND_COMPLETED: EventKind
EVENT_KIND_FAILED: EventKind
EVENT_KIND_CANCELLED: EventKind
DELIVERY_OUTCOME_UNSPECIFIED: DeliveryOutcome
DELIVERY_OUTCOME_DELIVERED: DeliveryOutcome
DELIVERY_OUTCOME_RETRY: DeliveryOutcome
DELIVERY_OUTCOME_GAVE_UP: DeliveryOutcome

class JobError(_message.Message):
    __slots__ = ("code", "message", "retryable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    retryable: bool
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "user_id", "session_id", "message_id", "job_type", "status", "title", "payload_json", "result_json", "error", "priority", "retry_count", "max_retries", "created_at", "run_at", "started_at", "completed_at", "expires_at", "updated_at", "progress", "progress_message", "worker_id", "idempotency_key", "last_event_id", "artifact_id", "release_count", "attempts")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    session_id: str
    message_id: str
    job_type: str
    status: JobStatus
    title: str
    payload_json: str
    result_json: str
    error: JobError
    priority: int
    retry_count: int
    max_retries: int
    created_at: _timestamp_pb2.Timestamp
    run_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    progress: int
    progress_message: str
    worker_id: str
    idempotency_key: str
    last_event_id: int
    artifact_id: str
    release_count: int
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., message_id: _Optional[str] = ..., job_type: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., title: _Optional[str] = ..., payload_json: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., priority: _Optional[int] = ..., retry_count: _Optional[int] = ..., max_retries: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[int] = ..., progress_message: _Optional[str] = ..., worker_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., last_event_id: _Optional[int] = ..., artifact_id: _Optional[str] = ..., release_count: _Optional[int] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("attempt", "started_at", "ended_at", "worker_id", "error", "status")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    worker_id: str
    error: JobError
    status: JobStatus
    def __init__(self, attempt: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker_id: _Optional[str] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., status: _Optional[_Union[JobStatus, str]] = ...) -> None: ...

class EnqueueRequest(_message.Message):
    __slots__ = ("job_type", "payload_json", "title", "user_id", "session_id", "message_id", "priority", "max_retries", "delay_ms", "run_at", "ttl_ms", "expires_at", "idempotency_key", "webhook_url")
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    job_type: str
    payload_json: str
    title: str
    user_id: str
    session_id: str
    message_id: str
    priority: int
    max_retries: int
    delay_ms: int
    run_at: _timestamp_pb2.Timestamp
    ttl_ms: int
    expires_at: _timestamp_pb2.Timestamp
    idempotency_key: str
    webhook_url: str
    def __init__(self, job_type: _Optional[str] = ..., payload_json: _Optional[str] = ..., title: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., message_id: _Optional[str] = ..., priority: _Optional[int] = ..., max_retries: _Optional[int] = ..., delay_ms: _Optional[int] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl_ms: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., webhook_url: _Optional[str] = ...) -> None: ...

class EnqueueResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class EnqueueManyRequest(_message.Message):
    __slots__ = ("jobs", "view")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[EnqueueRequest]
    view: JobView
    def __init__(self, jobs: _Optional[_Iterable[_Union[EnqueueRequest, _Mapping]]] = ..., view: _Optional[_Union[JobView, str]] = ...) -> None: ...

class EnqueueManyResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[EnqueueResponse]
    def __init__(self, jobs: _Optional[_Iterable[_Union[EnqueueResponse, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "user_id", "include_payload", "include_attempts")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user_id: str
    include_payload: bool
    include_attempts: bool
    def __init__(self, job_id: _Optional[str] = ..., user_id: _Optional[str] = ..., include_payload: _Optional[bool] = ..., include_attempts: _Optional[bool] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("user_id", "session_id", "statuses", "page_size", "page_token", "include_payloads")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    session_id: str
    statuses: _containers.RepeatedScalarFieldContainer[JobStatus]
    page_size: int
    page_token: str
    include_payloads: bool
    def __init__(self, user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[JobStatus, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_payloads: _Optional[bool] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("job_id", "user_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RetryRequest(_message.Message):
    __slots__ = ("job_id", "user_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RedriveRequest(_message.Message):
    __slots__ = ("job_type", "failed_after", "failed_before", "limit", "reason")
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    FAILED_AFTER_FIELD_NUMBER: _ClassVar[int]
    FAILED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_type: str
    failed_after: _timestamp_pb2.Timestamp
    failed_before: _timestamp_pb2.Timestamp
    limit: int
    reason: str
    def __init__(self, job_type: _Optional[str] = ..., failed_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failed_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RedriveResponse(_message.Message):
    __slots__ = ("job_ids", "more")
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    more: bool
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ..., more: _Optional[bool] = ...) -> None: ...

class TypeStatusCount(_message.Message):
    __slots__ = ("job_type", "status", "count")
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    job_type: str
    status: JobStatus
    count: int
    def __init__(self, job_type: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., count: _Optional[int] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("counts", "oldest_due_pending_age_seconds", "due_pending", "delayed_pending", "processing", "enqueued_last_minute", "completed_last_minute", "failed_last_minute", "retried_last_minute", "expired_leases_last_minute")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_DUE_PENDING_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DUE_PENDING_FIELD_NUMBER: _ClassVar[int]
    DELAYED_PENDING_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    FAILED_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    RETRIED_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_LEASES_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[TypeStatusCount]
    oldest_due_pending_age_seconds: float
    due_pending: int
    delayed_pending: int
    processing: int
    enqueued_last_minute: int
    completed_last_minute: int
    failed_last_minute: int
    retried_last_minute: int
    expired_leases_last_minute: int
    def __init__(self, counts: _Optional[_Iterable[_Union[TypeStatusCount, _Mapping]]] = ..., oldest_due_pending_age_seconds: _Optional[float] = ..., due_pending: _Optional[int] = ..., delayed_pending: _Optional[int] = ..., processing: _Optional[int] = ..., enqueued_last_minute: _Optional[int] = ..., completed_last_minute: _Optional[int] = ..., failed_last_minute: _Optional[int] = ..., retried_last_minute: _Optional[int] = ..., expired_leases_last_minute: _Optional[int] = ...) -> None: ...

class ClaimRequest(_message.Message):
    __slots__ = ("worker_id", "job_types", "max_jobs", "wait_ms", "lease_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    job_types: _containers.RepeatedScalarFieldContainer[str]
    max_jobs: int
    wait_ms: int
    lease_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., job_types: _Optional[_Iterable[str]] = ..., max_jobs: _Optional[int] = ..., wait_ms: _Optional[int] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class ClaimedJob(_message.Message):
    __slots__ = ("job", "lease_token", "lease_expires_at", "attempt")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    lease_token: str
    lease_expires_at: _timestamp_pb2.Timestamp
    attempt: int
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., lease_token: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ...) -> None: ...

class ClaimResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[ClaimedJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[ClaimedJob, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("job_id", "lease_token", "progress", "message", "lease_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_token: str
    progress: int
    message: str
    lease_ms: int
    def __init__(self, job_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., progress: _Optional[int] = ..., message: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("lease_expires_at", "cancelled")
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    lease_expires_at: _timestamp_pb2.Timestamp
    cancelled: bool
    def __init__(self, lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled: _Optional[bool] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("job_id", "lease_token", "result_json", "artifact_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_token: str
    result_json: str
    artifact_id: str
    def __init__(self, job_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., result_json: _Optional[str] = ..., artifact_id: _Optional[str] = ...) -> None: ...

class CompleteManyRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[CompleteRequest]
    def __init__(self, jobs: _Optional[_Iterable[_Union[CompleteRequest, _Mapping]]] = ...) -> None: ...

class CompleteOutcome(_message.Message):
    __slots__ = ("job_id", "completed", "error_code", "error_message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    completed: bool
    error_code: str
    error_message: str
    def __init__(self, job_id: _Optional[str] = ..., completed: _Optional[bool] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class CompleteManyResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[CompleteOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[CompleteOutcome, _Mapping]]] = ...) -> None: ...

class ReleaseWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "keep_job_ids")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    keep_job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., keep_job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseWorkerResponse(_message.Message):
    __slots__ = ("released_job_ids",)
    RELEASED_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    released_job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, released_job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("job_id", "lease_token", "code", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_token: str
    code: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("job", "attempt_counted", "retry_at")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNTED_FIELD_NUMBER: _ClassVar[int]
    RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    attempt_counted: bool
    retry_at: _timestamp_pb2.Timestamp
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., attempt_counted: _Optional[bool] = ..., retry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("job_id", "lease_token", "error_code", "error_message", "retryable")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_token: str
    error_code: str
    error_message: str
    retryable: bool
    def __init__(self, job_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class FailResponse(_message.Message):
    __slots__ = ("job", "will_retry", "retry_at")
    JOB_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    will_retry: bool
    retry_at: _timestamp_pb2.Timestamp
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., will_retry: _Optional[bool] = ..., retry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("id", "job_id", "filename", "content_type", "size_bytes", "sha256", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., job_id: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ArtifactHeader(_message.Message):
    __slots__ = ("job_id", "lease_token", "filename", "content_type")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_token: str
    filename: str
    content_type: str
    def __init__(self, job_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class CompleteWithArtifactRequest(_message.Message):
    __slots__ = ("job_id", "lease_token", "filename", "content_type", "content", "result_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_token: str
    filename: str
    content_type: str
    content: bytes
    result_json: str
    def __init__(self, job_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., content: _Optional[bytes] = ..., result_json: _Optional[str] = ...) -> None: ...

class UploadArtifactRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ArtifactHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ArtifactHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class DownloadArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "user_id")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    user_id: str
    def __init__(self, artifact_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DownloadArtifactResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: Artifact
    chunk: bytes
    def __init__(self, info: _Optional[_Union[Artifact, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("job_id", "user_id", "session_id", "after_event_id", "all_jobs", "history_only")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_JOBS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ONLY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user_id: str
    session_id: str
    after_event_id: int
    all_jobs: bool
    history_only: bool
    def __init__(self, job_id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., after_event_id: _Optional[int] = ..., all_jobs: _Optional[bool] = ..., history_only: _Optional[bool] = ...) -> None: ...

class WatchAllJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("id", "job_id", "kind", "status", "progress", "message", "result_json", "error", "created_at", "job_type", "user_id", "session_id", "attempt", "retry_at", "marker", "retried")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    id: int
    job_id: str
    kind: EventKind
    status: JobStatus
    progress: int
    message: str
    result_json: str
    error: JobError
    created_at: _timestamp_pb2.Timestamp
    job_type: str
    user_id: str
    session_id: str
    attempt: int
    retry_at: _timestamp_pb2.Timestamp
    marker: WatchMarker
    retried: bool
    def __init__(self, id: _Optional[int] = ..., job_id: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., status: _Optional[_Union[JobStatus, str]] = ..., progress: _Optional[int] = ..., message: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job_type: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., attempt: _Optional[int] = ..., retry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., marker: _Optional[_Union[WatchMarker, str]] = ..., retried: _Optional[bool] = ...) -> None: ...

class ClaimDeliveriesRequest(_message.Message):
    __slots__ = ("sender_id", "max", "lease_ms")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    max: int
    lease_ms: int
    def __init__(self, sender_id: _Optional[str] = ..., max: _Optional[int] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("id", "job_id", "event_id", "event_type", "url", "attempt", "lease_token", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_id: str
    event_id: int
    event_type: str
    url: str
    attempt: int
    lease_token: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., job_id: _Optional[str] = ..., event_id: _Optional[int] = ..., event_type: _Optional[str] = ..., url: _Optional[str] = ..., attempt: _Optional[int] = ..., lease_token: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClaimDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class ReportDeliveryRequest(_message.Message):
    __slots__ = ("delivery_id", "lease_token", "outcome", "status_code", "error", "retry_ms")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRY_MS_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    lease_token: str
    outcome: DeliveryOutcome
    status_code: int
    error: str
    retry_ms: int
    def __init__(self, delivery_id: _Optional[str] = ..., lease_token: _Optional[str] = ..., outcome: _Optional[_Union[DeliveryOutcome, str]] = ..., status_code: _Optional[int] = ..., error: _Optional[str] = ..., retry_ms: _Optional[int] = ...) -> None: ...

class ReportDeliveryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJobWebhookRequest(_message.Message):
    __slots__ = ("job_id", "user_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user_id: str
    def __init__(self, job_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeliveryAttempt(_message.Message):
    __slots__ = ("attempt", "at", "status_code", "error", "next_attempt_at")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    at: _timestamp_pb2.Timestamp
    status_code: int
    error: str
    next_attempt_at: _timestamp_pb2.Timestamp
    def __init__(self, attempt: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status_code: _Optional[int] = ..., error: _Optional[str] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobWebhookDelivery(_message.Message):
    __slots__ = ("id", "event_id", "event_type", "state", "created_at", "next_attempt_at", "finished_at", "attempts")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    event_id: int
    event_type: str
    state: str
    created_at: _timestamp_pb2.Timestamp
    next_attempt_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempts: _containers.RepeatedCompositeFieldContainer[DeliveryAttempt]
    def __init__(self, id: _Optional[str] = ..., event_id: _Optional[int] = ..., event_type: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[DeliveryAttempt, _Mapping]]] = ...) -> None: ...

class JobWebhook(_message.Message):
    __slots__ = ("url", "deliveries")
    URL_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    url: str
    deliveries: _containers.RepeatedCompositeFieldContainer[JobWebhookDelivery]
    def __init__(self, url: _Optional[str] = ..., deliveries: _Optional[_Iterable[_Union[JobWebhookDelivery, _Mapping]]] = ...) -> None: ...

class WorkRequest(_message.Message):
    __slots__ = ("request_id", "credit", "hello", "heartbeat", "complete", "complete_with_artifact", "fail", "release", "pause", "complete_many")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_WITH_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    PAUSE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_MANY_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    credit: int
    hello: WorkHello
    heartbeat: HeartbeatRequest
    complete: CompleteRequest
    complete_with_artifact: CompleteWithArtifactRequest
    fail: FailRequest
    release: ReleaseRequest
    pause: WorkPause
    complete_many: CompleteManyRequest
    def __init__(self, request_id: _Optional[int] = ..., credit: _Optional[int] = ..., hello: _Optional[_Union[WorkHello, _Mapping]] = ..., heartbeat: _Optional[_Union[HeartbeatRequest, _Mapping]] = ..., complete: _Optional[_Union[CompleteRequest, _Mapping]] = ..., complete_with_artifact: _Optional[_Union[CompleteWithArtifactRequest, _Mapping]] = ..., fail: _Optional[_Union[FailRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., pause: _Optional[_Union[WorkPause, _Mapping]] = ..., complete_many: _Optional[_Union[CompleteManyRequest, _Mapping]] = ...) -> None: ...

class WorkHello(_message.Message):
    __slots__ = ("worker_id", "job_types", "lease_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    job_types: _containers.RepeatedScalarFieldContainer[str]
    lease_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., job_types: _Optional[_Iterable[str]] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class WorkPause(_message.Message):
    __slots__ = ("keep_job_ids",)
    KEEP_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    keep_job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keep_job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkResponse(_message.Message):
    __slots__ = ("request_id", "jobs", "cancelled_job_id", "ack")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    jobs: WorkJobs
    cancelled_job_id: str
    ack: WorkAck
    def __init__(self, request_id: _Optional[int] = ..., jobs: _Optional[_Union[WorkJobs, _Mapping]] = ..., cancelled_job_id: _Optional[str] = ..., ack: _Optional[_Union[WorkAck, _Mapping]] = ...) -> None: ...

class WorkJobs(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[ClaimedJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[ClaimedJob, _Mapping]]] = ...) -> None: ...

class WorkAck(_message.Message):
    __slots__ = ("code", "message", "lease_expires_at", "cancelled", "will_retry", "retry_at", "attempt_counted", "released_job_ids", "outcomes")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNTED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    lease_expires_at: _timestamp_pb2.Timestamp
    cancelled: bool
    will_retry: bool
    retry_at: _timestamp_pb2.Timestamp
    attempt_counted: bool
    released_job_ids: _containers.RepeatedScalarFieldContainer[str]
    outcomes: _containers.RepeatedCompositeFieldContainer[CompleteOutcome]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled: _Optional[bool] = ..., will_retry: _Optional[bool] = ..., retry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt_counted: _Optional[bool] = ..., released_job_ids: _Optional[_Iterable[str]] = ..., outcomes: _Optional[_Iterable[_Union[CompleteOutcome, _Mapping]]] = ...) -> None: ...
