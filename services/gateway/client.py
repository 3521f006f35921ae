"""GET /client/docjobs.js and /client/docjobs.d.ts: the browser client, as files a page imports.

A page imports the module from the gateway itself (`import {submit} from "<gateway>/client/docjobs.js"`),
so the client always matches the API it talks to. Module scripts are fetched in CORS mode: from another
origin the import works for the origins of DOCJOBS_CORS_ORIGINS only, like every other request.
Caching: `Cache-Control: no-cache` with a strong ETag (the file's sha256), so a browser revalidates each
time and gets a 304 while the file is unchanged, and a new gateway's client is picked up at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .errors import ApiError

CLIENT = Path(__file__).resolve().parent / "static" / "client"
CONTENT_TYPES = {
    "docjobs.js": "text/javascript; charset=utf-8",
    # No registered media type exists for TypeScript; this is the one its tools and Deno serve.
    "docjobs.d.ts": "application/typescript; charset=utf-8",
}


@dataclass(frozen=True)
class ClientFile:
    body: bytes
    content_type: str
    etag: str


def load() -> dict[str, ClientFile]:
    """The files, read once at start (they ship with the gateway and do not change under it)."""
    files = {}
    for name, content_type in CONTENT_TYPES.items():
        body = (CLIENT / name).read_bytes()
        files[name] = ClientFile(body, content_type, f'"{hashlib.sha256(body).hexdigest()}"')
    return files


FILES = web.AppKey("client_files", dict[str, ClientFile])


async def client_file(request: web.Request) -> web.Response:
    found = request.app[FILES].get(request.match_info["name"])
    if found is None:
        raise ApiError(404, "not_found", f"no such client file; there are {', '.join(CONTENT_TYPES)}")
    headers = {"ETag": found.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if found.etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})
