"""The restart policy of `docjobs up` on its own, with a clock of the test's: the backoff and the crash-loop
window exactly, without a process or a sleep. (tests/test_stack.py drives the supervisor with real processes.)"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import pytest

from docjobs.settings import SettingsError
from docjobs.stack import RestartPolicy, Restarts, Stack, StackSettings, describe_exit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_default_policy_is_more_than_five_restarts_in_sixty_seconds() -> None:
    assert RestartPolicy.from_env({}) == RestartPolicy(backoff_s=0.5, backoff_max_s=30.0, max_restarts=5,
                                                       window_s=60.0)


def test_the_backoff_doubles_with_each_recent_restart_up_to_its_cap() -> None:
    clock = Clock()
    restarts = Restarts(RestartPolicy(backoff_s=0.5, backoff_max_s=3.0, max_restarts=10, window_s=60.0), clock)
    delays = []
    for _ in range(6):
        delays.append(restarts.next_delay())
        restarts.record()
        clock.now += 1
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_sixth_restart_within_the_window_is_a_crash_loop_and_one_after_it_is_not() -> None:
    clock = Clock()
    restarts = Restarts(RestartPolicy(backoff_s=1.0, backoff_max_s=30.0, max_restarts=5, window_s=60.0), clock)
    start = clock.now
    for n in range(5):
        clock.now = start + 10 * n
        assert restarts.next_delay() == 2.0 ** n
        restarts.record()
    clock.now = start + 59.999
    assert restarts.next_delay() is None  # five restarts within the last 60 s: a sixth is one too many
    clock.now = start + 60.0  # the first has left the window: four remain
    assert restarts.recent() == 4
    assert restarts.next_delay() == 16.0


def test_the_backoff_starts_again_once_the_process_has_run_for_a_window() -> None:
    clock = Clock()
    restarts = Restarts(RestartPolicy(backoff_s=0.5, max_restarts=5, window_s=60.0), clock)
    for _ in range(3):
        restarts.record()
    assert restarts.next_delay() == 4.0
    clock.now += 60.0
    assert restarts.next_delay() == 0.5


def test_no_restarts_allowed_makes_any_exit_a_crash_loop() -> None:
    assert Restarts(RestartPolicy(max_restarts=0), Clock()).next_delay() is None


@pytest.mark.parametrize(("name", "value"), [
    ("DOCJOBS_RESTART_BACKOFF_S", "soon"),
    ("DOCJOBS_RESTART_BACKOFF_S", "-1"),
    ("DOCJOBS_RESTART_BACKOFF_MAX_S", "1e9"),
    ("DOCJOBS_CRASH_LOOP_RESTARTS", "five"),
    ("DOCJOBS_CRASH_LOOP_WINDOW_S", "0"),
])
def test_a_bad_restart_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        RestartPolicy.from_env({name: value})


def test_exits_are_described_in_words() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-200) == "was killed by signal 200"


def _stack() -> Stack:
    settings = StackSettings(database_url="postgresql://127.0.0.1/none", data_dir=Path("unused"), pg_port=1,
                             grpc_port=2, http_port=3, renderers=0)
    return Stack(settings, {}, poll_s=0.001)


def test_the_stop_signal_handler_takes_no_lock() -> None:
    """The handler runs in the main thread between two bytecodes, maybe while the supervisor's loop holds a
    lock: one that takes a lock can wait for its own thread forever. (It called threading.Event.set(), and
    `docjobs up` ignored a Ctrl-C once in a while: about one time in forty with a 0.1 ms poll.)"""
    stack = _stack()
    calls: list[str] = []

    def profile(_frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call":
            calls.append(f"{getattr(arg, '__self__', None).__class__.__name__}.{getattr(arg, '__name__', arg)}")

    sys.setprofile(profile)
    try:
        stack.request_stop(signal.SIGINT)
    finally:
        sys.setprofile(None)
    assert not [c for c in calls if c.endswith((".acquire", ".__enter__", ".wait"))], calls
    assert stack.stop_reason == "SIGINT (Ctrl-C)"


def test_a_signal_stops_the_supervisor_loop() -> None:
    stack = _stack()
    previous = signal.signal(signal.SIGALRM, stack.request_stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert stack.supervise() == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stack.stop_reason == "SIGALRM"
