"""The progress bar's rate and time left (``probe.cli.progress.Eta``), on a clock the
test moves by hand: a moving window of this session's completions, counting down between
them, never frozen on a slow last site, and no rate out of nothing after a resume."""

from __future__ import annotations

from probe.cli.progress import Eta, eta_words


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_rate_until_this_session_has_measured_something():
    """A resumed run starts with most targets done: that is not a speed."""
    clock = Clock()
    eta = Eta(clock=clock)
    assert eta.rate() is None and eta.left(100) is None
    assert eta_words(eta, 100) == "time left: estimating"
    clock.now += 2.0
    eta.done()
    assert eta.rate() == 0.5  # one in the two seconds since the session started


def test_the_rate_follows_a_moving_window():
    clock = Clock()
    eta = Eta(window=10, clock=clock)
    for _ in range(20):  # fast at first: 10/s
        clock.now += 0.1
        eta.done()
    assert abs((eta.rate() or 0) - 10) < 1e-6
    for _ in range(10):  # then slow: 1/s; the window forgets the fast start
        clock.now += 1.0
        eta.done()
    assert abs((eta.rate() or 0) - 1) < 1e-6
    assert abs((eta.left(30) or 0) - 30) < 1e-6


def test_the_estimate_counts_down_and_then_says_finishing_instead_of_freezing():
    clock = Clock()
    eta = Eta(clock=clock)
    for _ in range(10):
        clock.now += 1.0
        eta.done()
    assert eta.left(2) == 2.0
    clock.now += 1.5
    assert eta.left(2) == 0.5  # counting down between completions
    clock.now += 47  # the last, slow sites: 47 s and nothing finished
    assert eta.left(2) == 0.0
    assert eta_words(eta, 2) == "finishing the last 2"
    assert eta_words(eta, 0) == ""


def test_time_left_is_written_as_minutes_and_hours():
    clock = Clock()
    eta = Eta(clock=clock)
    for _ in range(5):
        clock.now += 2.0
        eta.done()
    assert eta_words(eta, 30) == "time left: 1:00"
    assert eta_words(eta, 3600) == "time left: 2:00:00"
