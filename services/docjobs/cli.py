"""The `docjobs` command: `up` runs the stack here; `submit`, `watch`, `retry` and `stats` talk to a
gateway; `health` checks one service (the container images' health checks)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from .settings import SettingsError, environ

if TYPE_CHECKING:
    from .client import Gateway


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="docjobs", description="Async document-generation jobs")
    parser.add_argument("--url", default=os.environ.get("DOCJOBS_URL", "http://127.0.0.1:8080"),
                        help="the gateway (default: $DOCJOBS_URL or http://127.0.0.1:8080)")
    parser.add_argument("--token", default=os.environ.get("DOCJOBS_TOKEN"),
                        help="bearer token (default: $DOCJOBS_TOKEN; none for the local demo)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the whole stack on this machine (what `make run` runs)")
    submit = commands.add_parser("submit", help="submit a request file (a POST /api/jobs body)")
    submit.add_argument("request", type=Path, help="e.g. examples/pdf.json")
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar")
    submit.add_argument("--out", type=Path, help="download the document here (implies --wait)")
    watch = commands.add_parser("watch", help="print a job's events as JSON lines until it ends")
    watch.add_argument("job_id")
    retry = commands.add_parser("retry", help="run a failed or cancelled job again; with --redrive, failed jobs in "
                                "bulk (a service token)")
    retry.add_argument("job_id", nargs="?", help="the job (not with --redrive)")
    retry.add_argument("--redrive", action="store_true", help="every failed job that matches the filters, at most "
                       "--limit (1000) per call: the answer's `more` says whether to call again")
    retry.add_argument("--document-type", help="with --redrive: only jobs of this type")
    retry.add_argument("--failed-after", help="with --redrive: only jobs that failed at or after this RFC 3339 "
                       "instant, e.g. 2026-11-30T09:00:00Z")
    retry.add_argument("--failed-before", help="with --redrive: only jobs that failed before this instant")
    retry.add_argument("--limit", type=int, help="with --redrive: at most this many jobs (1 to 1000)")
    commands.add_parser("stats", help="queue statistics")
    health = commands.add_parser("health", help="exit 0 when a service is healthy (for container health checks)")
    health.add_argument("kind", choices=("grpc", "http"), help="grpc: the gRPC health service; http: a 200 answer")
    health.add_argument("target", help="HOST:PORT for grpc, a URL for http")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    if args.command == "retry":
        filters = (args.document_type, args.failed_after, args.failed_before, args.limit)
        if args.redrive == bool(args.job_id):
            parser.error("retry takes a JOB_ID or --redrive (with its filters): one of them")
        if not args.redrive and any(f is not None for f in filters):
            parser.error("--document-type, --failed-after, --failed-before and --limit go with --redrive")
    if args.command == "health":
        from .health import grpc_healthy, http_ok

        check = grpc_healthy if args.kind == "grpc" else http_ok
        healthy = check(args.target, args.timeout)()
        print(f"{args.target}: {'healthy' if healthy else 'NOT healthy'}", file=sys.stderr)
        raise SystemExit(0 if healthy else 1)
    if args.command == "up":
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            from .stack import up

            raise SystemExit(up(environ()))
        except SettingsError as exc:
            print(f"docjobs: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    from . import client

    gateway = client.Gateway(args.url, args.token)
    try:
        if args.command == "submit":
            raise SystemExit(client.submit(gateway, args.request, args.wait, args.out))
        if args.command == "watch":
            raise SystemExit(client.watch(gateway, args.job_id))
        if args.command == "retry":
            raise SystemExit(_retry(gateway, args))
        raise SystemExit(client.stats(gateway))
    except (client.ClientError, OSError, ValueError) as exc:
        print(f"docjobs: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _retry(gateway: Gateway, args: argparse.Namespace) -> int:
    """POST /api/jobs/{id}/retry, or POST /api/jobs/redrive with the filters given; the answer on stdout."""
    headers = {"Content-Type": "application/json"}
    if args.redrive:
        names = {"documentType": args.document_type, "failedAfter": args.failed_after,
                 "failedBefore": args.failed_before, "limit": args.limit}
        body = {name: value for name, value in names.items() if value is not None}
        answer = gateway.json("/api/jobs/redrive", data=json.dumps(body).encode(), method="POST", headers=headers)
    else:
        answer = gateway.json(f"/api/jobs/{quote(args.job_id, safe='')}/retry", data=b"", method="POST",
                              headers=headers)
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    main()
