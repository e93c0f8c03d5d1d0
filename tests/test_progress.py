"""Progress output of ``voyado-sync run``: what a user watching a long backfill sees."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from tests.projects import BuiltProject
from voyado_sync.cli import _duration, _Progress, cli


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress(*, tty: bool, **kwargs: float) -> tuple[_Progress, io.StringIO, FakeClock]:
    stream, clock = io.StringIO(), FakeClock()
    return _Progress(stream=stream, tty=tty, clock=clock, **kwargs), stream, clock


def test_log_lines_are_periodic_and_end_with_a_final_line() -> None:
    report, out, clock = progress(tty=False, interval=10)
    for t, done in [(0, 0), (2, 100), (5, 250), (10, 500), (15, 750), (20, 1000), (21, 1000)]:
        clock.now = t
        report("events", done, 1000)

    assert out.getvalue().splitlines() == [
        "events: 0/1,000 rows (0%), --/s, -- left",
        "events: 500/1,000 rows (50%), 50.0/s, 10s left",
        "events: 1,000/1,000 rows done in 20s, 50.0/s",
    ]


def test_rate_and_time_left_follow_the_last_window_not_the_average() -> None:
    # 100 rows/s for a minute, then Voyado throttles to 10/s: the estimate must follow at once.
    report, out, clock = progress(tty=False, interval=0, window=30)
    done = 0
    for t in range(0, 61, 2):
        clock.now, done = t, t * 100
        report("events", done, 100_000)
    for t in range(62, 123, 2):
        clock.now, done = t, done + 20
        report("events", done, 100_000)

    last = out.getvalue().splitlines()[-1]
    # Average over the run would say ~50/s and ~11 minutes; the last 30 s say 10/s.
    assert last == "events: 6,620/100,000 rows (7%), 10.0/s, 2h35m left"


def test_terminal_bar_is_redrawn_in_place_and_finished_on_its_own_line() -> None:
    report, out, clock = progress(tty=True, width=10)
    clock.now = 0
    report("events", 0, 200)
    clock.now = 4
    report("events", 100, 200)
    assert "\n" not in out.getvalue()
    bar = "\r[#####.....] events: 100/200 rows (50%), 25.0/s, 4s left\033[K"
    assert out.getvalue().endswith(bar)

    clock.now = 8
    report("events", 200, 200)
    assert out.getvalue().endswith("\revents: 200/200 rows done in 8s, 25.0/s\033[K\n")
    report.close()  # nothing left open: no blank line
    assert out.getvalue().endswith("25.0/s\033[K\n")


def test_an_interrupted_bar_is_closed_so_the_summary_starts_on_a_new_line() -> None:
    report, out, clock = progress(tty=True)
    report("events", 0, 5000)
    clock.now = 3
    report("events", 150, 5000)
    report.close()
    assert out.getvalue().endswith("\033[K\n")


def test_models_with_nothing_to_send_show_no_progress() -> None:
    for tty in (True, False):
        report, out, _ = progress(tty=tty)
        report("events", 0, 0)
        report.close()
        assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (245, "4m05s"), (3720, "1h02m"), (90000, "25h00m")],
)
def test_durations_are_short_and_readable(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


def _run(project: BuiltProject, *args: str) -> tuple[str, str, int]:
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.project_dir),
            *args,
        ],
        catch_exceptions=False,
    )
    return result.stdout, result.stderr, result.exit_code


@pytest.mark.slow
def test_json_output_is_pure_json_and_progress_stays_out_of_it(bulk: BuiltProject) -> None:
    stdout, stderr, code = _run(bulk, "--json", "--rate", "200")

    assert code == 0
    doc = json.loads(stdout)  # the whole of stdout, nothing before or after
    assert doc["models"][0]["sent"] == 300
    assert "rows" not in stderr  # no progress lines anywhere with --json


@pytest.mark.slow
def test_without_json_a_log_reader_sees_each_models_final_progress_line(
    bulk: BuiltProject,
) -> None:
    stdout, stderr, code = _run(bulk, "--rate", "200")

    assert code == 0
    assert "bulk_events: 300/300 rows done in" in stderr
    assert "rows done in" not in stdout  # stdout is the summary alone


def test_json_log_format_turns_each_progress_line_into_one_json_object(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FakeClock()
    report = _Progress(tty=True, clock=clock, interval=10, json_lines=True)
    for t, done in [(0, 0), (10, 500), (20, 1000)]:
        clock.now = t
        report("events", done, 1000)
    report.close()

    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["event"], r["model"], r["done"], r["total"]) for r in records] == [
        ("progress", "events", 0, 1000),
        ("progress", "events", 500, 1000),
        ("progress", "events", 1000, 1000),
    ]
    assert records[1]["rate"] == 50.0 and records[2]["seconds"] == 20
    assert records[2]["message"] == "events: 1,000/1,000 rows done in 20s, 50.0/s"
    assert "\r" not in "".join(lines)  # never a terminal bar, even on a terminal
