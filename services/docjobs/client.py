"""`docjobs submit`, `docjobs watch`, `docjobs stats`: the gateway's HTTP API from a terminal.

Only the standard library: the commands follow Server-Sent Events the way a browser does (resuming with
Last-Event-ID if the connection drops) and draw a progress bar on stderr.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BAR_WIDTH = 30


class ClientError(Exception):
    pass


class Gateway:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def _request(self, path: str, *, data: bytes | None = None, method: str = "GET",
                 headers: dict[str, str] | None = None, timeout: float = 30) -> Any:
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                field = f" ({error['field']})" if error.get("field") else ""
                raise ClientError(f"{exc.code}{field}: {error['message']}") from None
            except (ValueError, KeyError):
                raise ClientError(f"{exc.code}: {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc.reason}") from None

    def json(self, path: str, **kwargs: Any) -> Any:
        with self._request(path, **kwargs) as response:
            return json.loads(response.read())

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        job: dict[str, Any] = self.json("/api/jobs", data=json.dumps(body).encode(), method="POST",
                                        headers={"Content-Type": "application/json"})
        return job

    def events(self, events_url: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event name, data) until the stream's terminal event; reconnects with Last-Event-ID."""
        last_id = None
        for _ in range(20):
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                with self._request(events_url, headers=headers, timeout=120) as response:
                    name, data = "message", []
                    for raw in response:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
                        elif line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            payload = json.loads("\n".join(data))
                            yield name, payload
                            if name in ("job-complete", "job-failed", "error"):
                                return
                            name, data = "message", []
            except (OSError, ClientError):
                time.sleep(1)
        raise ClientError("the event stream kept dropping")

    def download(self, url: str, target: Path) -> int:
        size = 0
        with self._request(url, timeout=120) as response, target.open("wb") as f:
            while chunk := response.read(256 * 1024):
                f.write(chunk)
                size += len(chunk)
        return size


def _bar(progress: int, label: str) -> None:
    filled = BAR_WIDTH * progress // 100
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress:3d}% {label[:40]:40s}")
    sys.stderr.flush()


def follow(gateway: Gateway, events_url: str, quiet: bool = False) -> dict[str, Any]:
    """Follow a job to its end; returns the terminal event's data (raises ClientError when it failed)."""
    for name, data in gateway.events(events_url):
        if name == "progress" and not quiet:
            _bar(data.get("progress", 0), data.get("message", ""))
        elif name == "status" and not quiet:
            _bar(0 if data["status"] == "pending" else 1, data["status"])
        elif name == "job-complete":
            if not quiet:
                _bar(100, "completed")
                sys.stderr.write("\n")
            return data
        elif name in ("job-failed", "error"):
            if not quiet:
                sys.stderr.write("\n")
            error = data.get("error", {})
            raise ClientError(f"job failed: {error.get('code', '')}: {error.get('message', '')}")
    raise ClientError("the event stream ended early")


def submit(gateway: Gateway, request_file: Path, wait: bool, out: Path | None) -> int:
    body = json.loads(request_file.read_text(encoding="utf-8"))
    created = gateway.submit(body)
    print(created["jobId"])
    if not wait and out is None:
        return 0
    done = follow(gateway, created["eventsUrl"])
    result = done["result"]
    target = out or Path(result["filename"])
    size = gateway.download(result["downloadUrl"], target)
    print(f"saved {target} ({size} bytes)", file=sys.stderr)
    return 0


def watch(gateway: Gateway, job_id: str) -> int:
    job = gateway.json(f"/api/jobs/{job_id}")
    for name, data in gateway.events(job["eventsUrl"]):
        print(json.dumps({"event": name, **data}), flush=True)
    return 0


def stats(gateway: Gateway) -> int:
    print(json.dumps(gateway.json("/api/stats"), indent=2))
    return 0
