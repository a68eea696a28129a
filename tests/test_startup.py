"""The start-up clock's arithmetic (scm_ray/startup.py); the real marks of a run are checked in
tests/train/test_console.py (a Ray run through the CLI) and tests/tune/test_search.py."""

from __future__ import annotations

import json

from scm_ray.startup import PHASES, StartupClock


def test_phases_are_differences_between_marks_and_survive_the_trip_through_a_dict():
    clock = StartupClock(100.0, "the command started", [("imports", 100.5), ("checks", 103.0)])
    clock.marks.append(("first step", 110.25))
    assert clock.phases() == [("imports", 0.5), ("checks", 2.5), ("first step", 7.25)]
    assert clock.total() == 10.25
    again = StartupClock.from_dict(json.loads(json.dumps(clock.to_dict())))
    assert again == clock
    assert clock.line() == ("[scm-ray] first optimizer step 10.2 s after the command started "
                            "(imports 0.5, checks 2.5, first step 7.2 s)")
    saved = json.loads(clock.to_json())
    assert saved["phases_s"] == {"imports": 0.5, "checks": 2.5, "first step": 7.25} and saved["total_s"] == 10.25
    assert StartupClock.from_dict(None) is None


def test_a_command_counts_from_its_process_start():
    import time

    clock = StartupClock.for_command()
    assert clock.origin <= time.time() and set(PHASES) >= {"imports", "worker group", "first batch"}
    called = StartupClock.for_call()  # training started from Python counts from the call
    assert called.origin >= clock.origin and called.since == "training was started"
