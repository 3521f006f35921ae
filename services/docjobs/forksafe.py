"""Imported by each service package before anything imports grpc (jobstore/__init__.py, renderer/__init__.py).

The services run on uvloop, whose subprocesses start with fork(), not vfork(): the renderer's converter
boxes and zygotes, the jobstore's other processes (DOCJOBS_JOBSTORE_PROCESSES). grpc's fork support, on
by default in its Python builds, restarts grpc's event engine threads in the child of a fork() before the
child reaches exec(), and those threads crashed the child (SIGSEGV in cygrpc, before exec: no word on
stderr) often enough to fail one converter start in a few under load. No child uses grpc from its
parent: every one execs at once. grpc reads the setting when it starts, so it is set before any import.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
