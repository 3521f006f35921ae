"""The `docjobs` command: `up` runs the stack here; `submit`, `watch` and `stats` talk to a gateway;
`health` checks one service (the container images' health checks)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .settings import SettingsError, environ


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
    commands.add_parser("stats", help="queue statistics")
    health = commands.add_parser("health", help="exit 0 when a service is healthy (for container health checks)")
    health.add_argument("kind", choices=("grpc", "http"), help="grpc: the gRPC health service; http: a 200 answer")
    health.add_argument("target", help="HOST:PORT for grpc, a URL for http")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
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
        raise SystemExit(client.stats(gateway))
    except (client.ClientError, OSError, ValueError) as exc:
        print(f"docjobs: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
