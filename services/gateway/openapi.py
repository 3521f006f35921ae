"""The OpenAPI 3.1 document of the gateway, served at /openapi.json (a test checks it against the
routes the application really has)."""

from __future__ import annotations

from typing import Any

from docjobs import jobtypes

from .settings import Settings

ERROR = {"$ref": "#/components/responses/Error"}
JOB_ID = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
URL_TOKEN = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "The token of a URL handed out for this job (eventsUrl, downloadUrl); "
                            "instead of the Authorization header"}


_RENDITION_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
RENDITIONS: dict[str, Any] = {
    "type": "object", "description": "The renditions the request asked for: each a signed url (served "
    "inline) with its size, or the error that kept it from being made (the document itself is not failed "
    "by it): rendition_failed, rendition_timeout, converter_crashed",
    "properties": {
        "pdf": {"oneOf": [{"type": "object", "required": ["url", "sizeBytes"], "properties": {
            "url": {"type": "string"}, "sizeBytes": {"type": "integer"}, "contentType": {"type": "string"},
            "pages": {"type": "integer"}}}, _RENDITION_ERROR]},
        "thumbnail": {"oneOf": [{"type": "object", "required": ["url", "sizeBytes", "width", "height"], "properties": {
            "url": {"type": "string"}, "sizeBytes": {"type": "integer"}, "contentType": {"type": "string"},
            "width": {"type": "integer"}, "height": {"type": "integer"}, "pages": {"type": "integer"}}},
            _RENDITION_ERROR]}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SESSION_URL_TOKEN = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "The token of a sessionEventsUrl handed out with a job; instead of the "
                                    "Authorization header"}


def document(settings: Settings | None = None) -> dict[str, Any]:
    """The document; the bounds of the job knobs are the gateway's settings."""
    limits = settings or Settings()
    job = {"$ref": "#/components/schemas/Job"}
    create = {
        "summary": "Submit a document job",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "maxLength": 200, "pattern": "^[ -~]*$"},
                        "description": "Printable ASCII; the same key of the same user gives the same job"}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/JobRequest"}}}},
        "responses": {"202": _json({"$ref": "#/components/schemas/Accepted"}, "Accepted"),
                      "400": ERROR, "401": ERROR, "403": ERROR, "408": ERROR, "413": ERROR, "415": ERROR,
                      "422": ERROR, "503": ERROR},
    }
    get_job = {"summary": "A job", "parameters": [JOB_ID],
               "responses": {"200": _json(job, "The job"), "401": ERROR, "404": ERROR}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "docjobs gateway", "version": "1.0.0",
                 "description": "Async document generation: submit, follow over Server-Sent Events, download."},
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "HS256. A user's token: `sub` is the user id. A service's token (a backend acting "
                               "for its users): `scope` holds `docjobs:service` (signed with "
                               "DOCJOBS_SERVICE_JWT_SECRET when the gateway has one); it names the user in "
                               "`userId` and may read, list, stream and cancel any user's jobs. `exp` is "
                               "required."}},
            "responses": {"Error": _json({"$ref": "#/components/schemas/Error"}, "An error")},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "field": {"type": "string"}}}}},
                "Webhook": {"type": "object", "required": ["url", "deliveries"], "properties": {
                    "url": {"type": "string"},
                    "deliveries": {"type": "array", "description": "One per end of the job, oldest first",
                                   "items": {"type": "object", "properties": {
                        "id": {"type": "string", "description": "The webhook-id header of every attempt"},
                        "type": {"enum": ["job.completed", "job.failed"]}, "eventId": {"type": "integer"},
                        "state": {"enum": ["pending", "delivered", "failed"]},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "nextAttemptAt": {"type": ["string", "null"], "format": "date-time"},
                        "finishedAt": {"type": ["string", "null"], "format": "date-time"},
                        "attempts": {"type": "array", "items": {"type": "object", "properties": {
                            "attempt": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                            "statusCode": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
                            "nextAttemptAt": {"type": ["string", "null"], "format": "date-time"}}}}}}}}},
                "WebhookEvent": {"type": "object", "required": ["type", "timestamp", "data"], "properties": {
                    "type": {"enum": ["job.completed", "job.failed"]},
                    "timestamp": {"type": "string", "format": "date-time", "description": "When the job ended"},
                    "data": job}},
                "JobRequest": {
                    "type": "object", "required": ["documentType"],
                    "properties": {
                        "documentType": {"enum": list(jobtypes.JOB_TYPES)},
                        "title": {"type": "string", "maxLength": 500},
                        "spec": {"type": "object", "description": "The document, per the JSON Schema of its type: "
                                 "/api/schemas/{documentType}"},
                        "code": {"type": "string", "description": "Python building the document (code mode)"},
                        "sessionId": {"type": "string", "maxLength": 200},
                        "messageId": {"type": "string", "maxLength": 200},
                        "userId": {"type": ["string", "integer"], "minimum": 0, "maxLength": 200,
                                   "description": "Whose job it is. Required from a service (123 is the user "
                                                  "\"123\"); from a user, must be its own id if given"},
                        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000,
                                     "description": "Higher first; set by a service only (a user's is ignored)"},
                        "expiresInSeconds": {"type": "integer", "minimum": 1, "maximum": limits.max_expires_in_s,
                                             "description": "The job fails as `expired` if not finished this "
                                                            "long after it was accepted"},
                        "runAt": {"type": "string", "format": "date-time",
                                  "description": "RFC 3339 with an offset (Z or +hh:mm): not started before; "
                                                 f"at most {limits.max_run_at_ahead_s} s ahead"},
                        "maxRetries": {"type": "integer", "minimum": 0, "maximum": limits.max_retries_cap,
                                       "description": "Retries after a failed attempt (default: the server's)"},
                        "renditions": {"type": "array", "uniqueItems": True,
                                       "items": {"enum": ["pdf", "thumbnail"]},
                                       "description": "Also make the document as a PDF (a pdf job's is the "
                                                      "document) and a PNG of its first page, at least 400 px "
                                                      "wide: result.renditions (docs/renderer.md, Renditions)"},
                        "webhookUrl": {"type": "string", "format": "uri", "maxLength": 2000,
                                       "description": "POSTed, signed per Standard Webhooks, when the job completes "
                                                      "or fails (the `jobEnded` webhook). A service's only (a "
                                                      "user's is 403); an http(s) URL whose host is in "
                                                      "DOCJOBS_WEBHOOK_ALLOW, or, without that list, a public "
                                                      "address (422 otherwise). 422 when webhooks are off"},
                    }},
                "Accepted": {"type": "object", "required": ["jobId", "status", "eventsUrl", "statusUrl"],
                             "properties": {"jobId": {"type": "string"}, "status": {
                                 "enum": ["pending", "processing", "completed", "failed", "cancelled"],
                                 "description": "the job as stored: pending, or processing when a renderer "
                                                "waiting for work took it at once; an idempotent repeat "
                                                "answers with the job it names, in whatever state"},
                                            "created": {"type": "boolean"}, "eventsUrl": {"type": "string"},
                                            "statusUrl": {"type": "string"}, "downloadUrl": {"type": "string"},
                                            "sessionEventsUrl": {
                                                "type": "string", "description": "/api/events of the job's "
                                                "session (of all the user's jobs when it has none), signed for "
                                                "the job's user"}}},
                "Job": {"type": "object", "required": ["jobId", "status", "documentType"], "properties": {
                    "jobId": {"type": "string"}, "userId": {"type": "string"}, "priority": {"type": "integer"},
                    "maxRetries": {"type": "integer"}, "attempts": {"type": "integer"},
                    "runAt": {"type": ["string", "null"], "format": "date-time"},
                    "expiresAt": {"type": ["string", "null"], "format": "date-time"},
                    "status": {"enum": ["pending", "processing", "completed", "failed", "cancelled"]},
                    "documentType": {"type": "string"}, "title": {"type": "string"},
                    "progress": {"type": "integer"}, "progressMessage": {"type": "string"},
                    "result": {"type": "object", "properties": {"renditions": RENDITIONS, "warnings": {
                        "type": "array", "description": "What the document could not be as asked (a spec job's; "
                        "empty otherwise): `glyph_missing`, a character no font of the renderer draws; "
                        "`formula_error` and `formula_unsupported`, a formula cell computed to an error or not "
                        "computed. `where` is its place in the spec, e.g. blocks[3].text or sheets[0].rows[2][3]",
                        "items": {"type": "object", "required": ["code", "message", "where"], "properties": {
                            "code": {"type": "string"}, "message": {"type": "string"},
                            "where": {"type": "string"}}}}}},
                    "error": {"type": "object"},
                    "webhook": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Webhook"}],
                                "description": "GET /api/jobs/{jobId}: the job's webhookUrl and its deliveries "
                                               "(null: none)"},
                    "eventsUrl": {"type": "string", "description": "Its token minted with this answer: a page "
                                  "whose eventsUrl expired reads the job again for a fresh one"},
                    "statusUrl": {"type": "string"},
                    "downloadUrl": {"type": "string"}, "lastEventId": {"type": "integer"},
                    "attemptHistory": {
                        "type": "array", "description": "GET /api/jobs/{jobId} only: every attempt that started "
                        "or ended, oldest first (a retried job's go on numbering from its last)",
                        "items": {"$ref": "#/components/schemas/Attempt"}}}},
                "Attempt": {"type": "object", "required": ["attempt", "outcome"], "properties": {
                    "attempt": {"type": "integer", "minimum": 1},
                    "startedAt": {"type": ["string", "null"], "format": "date-time",
                                  "description": "Its claim by a worker; null if it never started"},
                    "endedAt": {"type": ["string", "null"], "format": "date-time"},
                    "worker": {"type": ["string", "null"]},
                    "outcome": {"enum": ["running", "completed", "failed", "cancelled"],
                                "description": "failed also when a retry followed"},
                    "error": {"type": ["object", "null"], "properties": {"code": {"type": "string"},
                                                                         "message": {"type": "string"}}}}},
                "RedriveRequest": {"type": "object", "additionalProperties": False, "properties": {
                    "documentType": {"enum": list(jobtypes.JOB_TYPES), "description": "Only jobs of this type"},
                    "failedAfter": {"type": "string", "format": "date-time",
                                    "description": "Only jobs that failed at or after this instant (RFC 3339)"},
                    "failedBefore": {"type": "string", "format": "date-time",
                                     "description": "Only jobs that failed before this instant (RFC 3339)"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}}},
            },
        },
        "security": [{"bearer": []}],
        "webhooks": {"jobEnded": {"post": {
            "summary": "A job with a webhookUrl completed or failed (docs/gateway.md, Webhooks)",
            "description": "Signed per Standard Webhooks: webhook-id (the same on every attempt), webhook-timestamp, "
                           "webhook-signature `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with "
                           "DOCJOBS_WEBHOOK_SECRET. Retried with exponential backoff until a 2xx answer, for up to "
                           "DOCJOBS_WEBHOOK_MAX_AGE_S",
            "security": [], "parameters": [
                {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                for name in ("webhook-id", "webhook-timestamp", "webhook-signature")],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/WebhookEvent"}}}},
            "responses": {"2XX": {"description": "Delivered"},
                          "default": {"description": "Not delivered: tried again later"}}}}},
        "paths": {
            "/api/jobs": {
                "post": create,
                "get": {"summary": "The caller's jobs, newest first (a service's: userId's, or sessionId's)",
                        "parameters": [{"name": "sessionId", "in": "query", "schema": {"type": "string"}},
                                       {"name": "userId", "in": "query", "schema": {"type": "string"},
                                        "description": "A service: whose jobs; a user: its own id, if given"},
                                       {"name": "status", "in": "query", "schema": {"type": "string"}},
                                       {"name": "pageSize", "in": "query",
                                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                                       {"name": "pageToken", "in": "query", "schema": {"type": "string"}}],
                        "responses": {"200": _json({"type": "object", "properties": {
                            "jobs": {"type": "array", "items": job}, "nextPageToken": {"type": ["string", "null"]}}},
                            "A page of jobs"), "400": ERROR, "401": ERROR, "403": ERROR}},
            },
            "/api/jobs/enqueue": {"post": {**create, "summary": "Submit a document job (the backend's alias)"}},
            "/api/jobs/batch": {"post": {
                "summary": "Submit up to 1,000 jobs in one call, all or none: every job is checked before any is "
                           "stored, and a problem names its job (`jobs[3].documentType`). Each job is a "
                           "JobRequest with an optional idempotencyKey (printable ASCII, at most 200). A service "
                           "token only (403 for a user's). The answers are in the order of the jobs",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["jobs"], "additionalProperties": False, "properties": {
                        "jobs": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"allOf": [
                            {"$ref": "#/components/schemas/JobRequest"},
                            {"type": "object", "properties": {
                                "idempotencyKey": {"type": "string", "maxLength": 200, "pattern": "^[ -~]*$"}}}]}}}}}}},
                "responses": {"202": _json({"type": "object", "required": ["jobs"], "properties": {
                    "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}}}},
                    "Accepted, one answer per job"),
                    "400": ERROR, "401": ERROR, "403": ERROR, "408": ERROR, "413": ERROR, "415": ERROR,
                    "422": ERROR, "503": ERROR}}},
            "/api/jobs/{jobId}": {
                "get": get_job,
                "delete": {"summary": "Cancel a job", "parameters": [JOB_ID],
                           "responses": {"200": _json(job, "The cancelled job"), "401": ERROR, "404": ERROR,
                                         "409": ERROR}},
            },
            "/api/jobs/{jobId}/status": {"get": {**get_job, "summary": "A job's status"}},
            "/api/jobs/{jobId}/retry": {"post": {
                "summary": "Run a failed or cancelled job again: the same id, a new attempt, pending; its events "
                           "follow the old ones on its event stream. A fresh retry budget (its maxRetries as "
                           "enqueued); an expiry moves as far from now as it was from its creation",
                "parameters": [JOB_ID],
                "responses": {"202": _json(job, "The job, pending again"), "401": ERROR, "404": ERROR,
                              "409": _json({"$ref": "#/components/schemas/Error"},
                                           "The job is pending, processing or completed")}}},
            "/api/jobs/redrive": {"post": {
                "summary": "Run failed jobs of every user again, oldest failure first, at most `limit` (1,000) per "
                           "call: call again while `more` is true (with a fixed failedBefore, so that jobs that "
                           "fail again are not taken twice). A service token only (403 for a user's)",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RedriveRequest"}}}},
                "responses": {"200": _json({"type": "object", "required": ["count", "jobIds", "more"], "properties": {
                    "count": {"type": "integer"}, "jobIds": {"type": "array", "items": {"type": "string"}},
                    "more": {"type": "boolean", "description": "the limit was reached: more jobs may match"}}},
                    "The jobs run again"), "400": ERROR, "401": ERROR, "403": ERROR, "415": ERROR, "422": ERROR}}},
            "/api/jobs/{jobId}/events": {"get": {
                "summary": "The job's events as Server-Sent Events (status, progress, job-complete, job-failed, "
                           "error); it ends when its token expires (a fresh eventsUrl: GET /api/jobs/{jobId})",
                "parameters": [JOB_ID, URL_TOKEN,
                               {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                               {"name": "lastEventId", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "An event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              "400": ERROR, "401": ERROR, "404": ERROR, "429": ERROR}}},
            "/api/events": {"get": {
                "summary": "Every event of the caller's jobs, in one session or all of them, as one stream of "
                           "Server-Sent Events: the job stream's events, each with jobId; ids increase along "
                           "the stream; jobs created later are in it; it does not end when a job ends, but when "
                           "its token expires (a fresh sessionEventsUrl: /api/events/url)",
                "parameters": [{"name": "sessionId", "in": "query", "schema": {"type": "string", "maxLength": 200}},
                               SESSION_URL_TOKEN,
                               {"name": "userId", "in": "query", "schema": {"type": "string"},
                                "description": "Required from a service: whose jobs"},
                               {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                               {"name": "lastEventId", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "An event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              "400": ERROR, "401": ERROR, "403": ERROR, "429": ERROR}}},
            "/api/events/url": {"get": {
                "summary": "A fresh sessionEventsUrl (its token minted now), for a page whose URL token expired "
                           "(its stream ended, and reopening it gets 401); asked with a bearer token, never the "
                           "URL token. A job's fresh eventsUrl and downloadUrl: GET /api/jobs/{jobId}",
                "parameters": [{"name": "sessionId", "in": "query", "schema": {"type": "string", "maxLength": 200},
                                "description": "The session; none: a URL of all the user's jobs"},
                               {"name": "userId", "in": "query", "schema": {"type": "string"},
                                "description": "Required from a service: whose events"}],
                "responses": {"200": _json({"type": "object", "required": ["sessionEventsUrl"], "properties": {
                    "sessionEventsUrl": {"type": "string"}}}, "The URL, relative to the gateway"),
                              "400": ERROR, "401": ERROR, "403": ERROR}}},
            "/api/jobs/{jobId}/renditions/{kind}": {"get": {
                "summary": "A rendition of the finished document, shown inline: its PDF or its PNG thumbnail",
                "parameters": [JOB_ID, {"name": "kind", "in": "path", "required": True,
                                        "schema": {"enum": ["pdf", "thumbnail"]}}, URL_TOKEN],
                "responses": {"200": {"description": "The PDF or the PNG",
                                      "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}},
                                                  "image/png": {"schema": {"type": "string", "format": "binary"}}}},
                              "304": {"description": "Not modified (If-None-Match)"}, "401": ERROR, "404": ERROR,
                              "429": ERROR}}},
            "/api/jobs/{jobId}/artifact": {"get": {
                "summary": "Download the finished document", "parameters": [JOB_ID, URL_TOKEN],
                "responses": {"200": {"description": "The document",
                                      "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                          "format": "binary"}}}},
                              "304": {"description": "Not modified (If-None-Match)"}, "401": ERROR, "404": ERROR,
                              "429": ERROR}}},
            "/api/stats": {"get": {"summary": "Queue statistics",
                                   "responses": {"200": _json({"type": "object"}, "Statistics"), "401": ERROR}}},
            "/api/examples/{documentType}": {"get": {
                "summary": "An example request", "security": [],
                "parameters": [{"name": "documentType", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"$ref": "#/components/schemas/JobRequest"}, "An example"), "404": ERROR}}},
            "/api/schemas/{documentType}": {"get": {
                "summary": "The JSON Schema of a document type's spec", "security": [],
                "parameters": [{"name": "documentType", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}, "A JSON Schema"), "404": ERROR}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [],
                                 "responses": {"200": _json({"type": "object"}, "Alive")}}},
            "/readyz": {"get": {"summary": "Readiness: the jobstore answers", "security": [],
                                "responses": {"200": _json({"type": "object"}, "Ready"),
                                              "503": _json({"type": "object"}, "Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": {"description": "Metrics",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI")}}},
            "/client/{name}": {"get": {
                "summary": "The browser client: docjobs.js (an ES module) and docjobs.d.ts (its TypeScript "
                           "declarations)", "security": [],
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string", "enum": ["docjobs.js", "docjobs.d.ts"]}}],
                "responses": {"200": {"description": "The file (Cache-Control: no-cache, with an ETag)",
                                      "content": {"text/javascript": {"schema": {"type": "string"}},
                                                  "application/typescript": {"schema": {"type": "string"}}}},
                              "304": {"description": "Not modified (If-None-Match)"}, "404": ERROR}}},
            "/": {"get": {"summary": "The demo page", "security": [],
                          "responses": {"200": {"description": "HTML",
                                                "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        },
    }
