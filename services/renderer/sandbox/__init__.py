"""Rendering in child processes forked from a warm parent (the zygote), one child per job, killable.

Spec jobs and code jobs both render this way: off the worker's event loop, without a per-job import
cost, and abortable at any moment. Code jobs additionally get the sandbox (see zygote.py)."""
