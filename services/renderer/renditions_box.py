"""The converter's own process, inside its box (renditions.py builds the box and talks to it).

It reads one request per line on stdin and answers one JSON line on stdout. A request names a document
in /docjobs-rendition (the box's only host directory); the answer names what it wrote there: `rendition.pdf` (the
document converted by LibreOffice, or the document itself for a PDF) and `thumbnail.png` (its first
page, drawn by pdfium). Everything in the box (this process, LibreOffice, pdfium) treats the document as
hostile, and the renderer treats these answers as hostile too: it checks every file it is pointed at.

LibreOffice runs warm: one `soffice` instance started at the box's start, on a fresh profile in the
box's /tmp with macros off and links never updated, holding an empty text document open (a headless
office with no document open quits after its first conversion). Each conversion is a second
`soffice.bin --convert-to`, which hands its request to the warm instance over the office's pipe in /tmp
and waits for it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORK = Path("/docjobs-rendition")  # not /work or /tmp: the runtime may live under either
PROFILE = Path("/tmp/profile")
PROFILE_URL = "file:///tmp/profile"
KEEP_OPEN = Path("/tmp/keep-open.txt")
THUMBNAIL_WIDTH = 800  # pixels; the page's shape sets the height
START_TIMEOUT_S = 60.0

# Macros never run (security level "very high" with no trusted place, and execution disabled outright);
# links to other files or to the web are never updated; nothing is fetched to show a linked image.
_SETTINGS = (
    ("Common/Security/Scripting", "MacroSecurityLevel", "3"),
    ("Common/Security/Scripting", "DisableMacrosExecution", "true"),
    ("Common/Security/Scripting", "BlockUntrustedRefererLinks", "true"),
    ("Writer/Content/Update", "Link", "2"),
    ("Calc/Content/Update", "Link", "2"),
)
REGISTRY = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
            'xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            + "".join(f'<item oor:path="/org.openoffice.Office.{path}"><prop oor:name="{name}" oor:op="fuse">'
                      f"<value>{value}</value></prop></item>\n" for path, name, value in _SETTINGS)
            + "</oor:items>\n")


def soffice_command(*args: str, program: str = "soffice") -> list[str]:
    return [program, f"-env:UserInstallation={PROFILE_URL}", "--headless", "--invisible", "--norestore",
            "--nologo", "--nodefault", "--nolockcheck", *args]


def office_binary() -> str:
    """soffice.bin itself, for the conversions: they only hand their request to the warm office, and the
    shell script and launcher in front of it cost a few hundred milliseconds each time (the warm office
    keeps them: the launcher restarts an office that asks for it on its first start)."""
    found = shutil.which("soffice")
    if found:
        binary = Path(os.path.realpath(found)).with_name("soffice.bin")
        if binary.is_file():
            return str(binary)
    return "soffice"


def start_office() -> subprocess.Popen[bytes]:
    (PROFILE / "user").mkdir(parents=True, exist_ok=True)
    (PROFILE / "user" / "registrymodifications.xcu").write_text(REGISTRY, encoding="utf-8")
    KEEP_OPEN.write_text("", encoding="utf-8")
    office = subprocess.Popen(soffice_command(str(KEEP_OPEN)), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=sys.stderr)
    # Ready once it serves a conversion: a first tiny one (its cost is the start's, not a job's).
    sample = Path("/tmp/warm-up.txt")
    sample.write_text("warm-up\n", encoding="utf-8")
    deadline = time.monotonic() + START_TIMEOUT_S
    # Its pipe first: a second soffice started before the office has its pipe becomes the office itself,
    # and the first one then hands it its document and quits.
    # Then its document: an office whose document is not open yet quits after serving the first
    # conversion. Its lock file says it is open.
    lock = KEEP_OPEN.with_name(f".~lock.{KEEP_OPEN.name}#")
    while not lock.exists() or not any(p.name.startswith("OSL_PIPE_") for p in Path("/tmp").iterdir()):
        if office.poll() is not None:
            raise RuntimeError(f"LibreOffice exited at start (status {office.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError("LibreOffice did not start in time")
        time.sleep(0.02)
    if convert_office(sample, Path("/tmp/warm-up-out"), max(1.0, deadline - time.monotonic())) is None:
        raise RuntimeError("LibreOffice could not convert a text file at start")
    if office.poll() is not None:
        raise RuntimeError(f"LibreOffice exited at start (status {office.returncode})")
    return office


OFFICE_BINARY = office_binary()


def convert_office(source: Path, out_dir: Path, timeout: float) -> Path | None:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (source.stem + ".pdf")
    target.unlink(missing_ok=True)
    try:
        subprocess.run(soffice_command("--convert-to", "pdf", "--outdir", str(out_dir), str(source),
                                       program=OFFICE_BINARY),
                       stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr,
                       timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    return target if target.is_file() and target.stat().st_size > 0 else None


def office_alive(office: subprocess.Popen[bytes], settle_s: float = 1.0) -> bool:
    """Whether the warm office survived a failed conversion. A killed office takes a moment to be gone
    (its address space is torn down first), so a dying one is given settle_s to show it."""
    deadline = time.monotonic() + settle_s
    while office.poll() is None and office_running():
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def office_running() -> bool:
    """Whether the office itself (soffice.bin) still runs: its launcher outlives it for a while. The
    box's /proc shows the box's processes only."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ...": a zombie (Z) or a dying process (X) is no office
            name, _, rest = stat.partition(") ")
            if name.endswith("(soffice.bin") and rest[:1] not in ("Z", "X"):
                return True
    return False


def thumbnail(pdf: Path, target: Path) -> dict[str, Any]:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        pages = len(document)
        if pages < 1:
            raise ValueError("the PDF has no page")
        page = document[0]
        width, _height = page.get_size()
        if width <= 0:
            raise ValueError("the first page has no width")
        image = page.render(scale=THUMBNAIL_WIDTH / width).to_pil()
        image.save(target, format="PNG", compress_level=1)
        return {"pages": pages, "width": image.width, "height": image.height}
    finally:
        document.close()


def page_count(pdf: Path) -> int:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        return len(document)
    finally:
        document.close()


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def serve(request: dict[str, Any], office: subprocess.Popen[bytes] | None) -> dict[str, Any]:
    source = WORK / "in" / str(request["input"])
    out = WORK / "out"
    timeout = float(request.get("timeout_s", 60))
    answer: dict[str, Any] = {}
    pdf: Path | None = None
    if request.get("office"):
        if office is None or office.poll() is not None:
            status = "not started" if office is None else f"exited with status {office.returncode}"
            answer["pdf"] = error("converter_crashed", f"LibreOffice is not running ({status})")
        else:
            started = time.perf_counter()
            converted = convert_office(source, WORK / "conv", timeout)
            answer["ms"] = {"convert": round((time.perf_counter() - started) * 1000)}
            if converted is None:
                alive = office_alive(office)
                answer["pdf"] = error("rendition_failed" if alive else "converter_crashed",
                                      "LibreOffice could not convert the document" if alive
                                      else "the converter stopped while converting the document")
            else:
                pdf = out / "rendition.pdf"
                converted.replace(pdf)
                answer["pdf"] = {"file": pdf.name}
    else:
        pdf = source
        if request.get("pdf"):
            answer["pdf"] = {"file": source.name, "same": True}
    if pdf is not None:
        try:
            if request.get("thumbnail"):
                started = time.perf_counter()
                drawn = thumbnail(pdf, out / "thumbnail.png")
                answer.setdefault("ms", {})["draw"] = round((time.perf_counter() - started) * 1000)
                answer["thumbnail"] = {"file": "thumbnail.png", "width": drawn["width"], "height": drawn["height"]}
                pages = drawn["pages"]
            else:
                pages = page_count(pdf)
            if "file" in answer.get("pdf", {}):
                answer["pdf"]["pages"] = pages
        except Exception as exc:  # whatever pdfium makes of a hostile PDF fails the rendition
            answer["thumbnail"] = error("rendition_failed", f"the PDF could not be drawn: {exc}"[:300])
    elif request.get("thumbnail"):
        answer["thumbnail"] = error("rendition_failed", "no PDF to draw the thumbnail from")
    return answer


def set_limits(limits: dict[str, Any]) -> None:
    """The render's limits, on this process and so on everything it starts (LibreOffice included), set
    before any document is read."""
    mb = 1024 * 1024
    for which, value in ((resource.RLIMIT_AS, int(limits["memory_mb"]) * mb),
                         (resource.RLIMIT_CPU, int(limits["cpu_s"])),
                         (resource.RLIMIT_FSIZE, int(limits["file_mb"]) * mb),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))
    if limits.get("processes"):  # counted for the box's own uid (the renderer gives it one as root)
        resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["processes"]), int(limits["processes"])))


def become(uid: int | None) -> None:
    """As root: become the box's own uid (every capability goes with root) and keep it (no_new_privs)."""
    from renderer.sandbox import linux

    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    config = json.loads(sys.argv[1])
    set_limits(config["limits"])
    become(config.get("uid"))
    office: subprocess.Popen[bytes] | None = None
    try:
        import pypdfium2  # noqa: F401 - imported once, before the first document: a thumbnail costs its drawing

        if config.get("office"):
            office = start_office()
    except Exception as exc:  # said to the renderer in one line, which ends the box
        print(json.dumps({"ready": False, "error": str(exc)[:300]}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            answer = serve(request, office)
        except Exception as exc:  # a bad request fails that request only
            answer = {"failed": str(exc)[:300]}
        for part in (WORK / "in").iterdir():
            part.unlink(missing_ok=True)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
