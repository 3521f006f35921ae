"""The renderer service: workers that claim document jobs from the jobstore and render xlsx, docx, pdf
and pptx files, from a declarative spec or from sandboxed code."""

import docjobs.forksafe  # noqa: F401 - before anything imports grpc: see there
