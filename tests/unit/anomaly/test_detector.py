"""The anomaly detector on synthetic traffic: a quiet simulated day, then each kind of spike.

Traffic is drawn from a seeded generator (Poisson-like counts, a slow daily drift, occasional
errors and failed logins, log-normal latency), one window a simulated minute; no sleeps, no wall
clock. What is asserted is what an operator would see: no alert over a normal day, and an alert in
the very window a spike happens, of the right kind and for the right subject.
"""

from __future__ import annotations

import math
import random

import pytest

from portcullis.anomaly.detector import Anomaly, AnomalyDetector, DetectorSettings

MINUTE = 60.0
DAY = 24 * 60


def normal_minute(detector: AnomalyDetector, rng: random.Random, minute: int, *, rate: float = 120.0,
                  route: str = "orders", consumer: str = "acme", error_share: float = 0.01,
                  latency_s: float = 0.02, failures: float = 2.0) -> None:
    drift = 1 + 0.3 * math.sin(2 * math.pi * minute / DAY)  # a gentle daily rhythm
    for _ in range(max(0, round(rng.gauss(rate * drift, math.sqrt(rate * drift))))):
        status = 500 if rng.random() < error_share else 200
        detector.observe(route, consumer, status, rng.lognormvariate(math.log(latency_s), 0.4))
    for _ in range(max(0, round(rng.gauss(failures, math.sqrt(failures))))):
        detector.observe(route, None, 401, 0.001, auth_failed=True)


def run(detector: AnomalyDetector, rng: random.Random, minutes: range) -> list[Anomaly]:
    found = []
    for minute in minutes:
        normal_minute(detector, rng, minute)
        found += detector.close_window((minute + 1) * MINUTE)
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_normal_noisy_day_raises_no_alert(seed: int) -> None:
    assert run(AnomalyDetector(), random.Random(seed), range(DAY)) == []


def _after_a_quiet_morning(seed: int = 7) -> tuple[AnomalyDetector, random.Random]:
    detector, rng = AnomalyDetector(), random.Random(seed)
    assert run(detector, rng, range(180)) == []
    return detector, rng


def test_a_threefold_volume_spike_is_flagged_in_its_own_window_for_its_route_and_consumer() -> None:
    detector, rng = _after_a_quiet_morning()
    normal_minute(detector, rng, 180, rate=600)
    found = detector.close_window(181 * MINUTE)
    assert {(a.kind, a.subject) for a in found} == {("volume_spike", "route:orders"),
                                                     ("volume_spike", "consumer:acme")}
    assert all(a.observed > 3 * a.expected and a.window_end == 181 * MINUTE for a in found)


def test_an_error_rate_spike_is_flagged() -> None:
    detector, rng = _after_a_quiet_morning()
    normal_minute(detector, rng, 180, error_share=0.2)
    kinds = {(a.kind, a.subject) for a in detector.close_window(181 * MINUTE)}
    assert ("error_rate_spike", "route:orders") in kinds and ("volume_spike", "route:orders") not in kinds


def test_a_latency_spike_is_flagged() -> None:
    detector, rng = _after_a_quiet_morning()
    normal_minute(detector, rng, 180, latency_s=0.2)
    assert ("latency_spike", "route:orders") in {(a.kind, a.subject) for a in detector.close_window(181 * MINUTE)}


def test_a_credential_stuffing_burst_is_flagged_as_failed_authentications() -> None:
    detector, rng = _after_a_quiet_morning()
    normal_minute(detector, rng, 180, failures=80)
    found = detector.close_window(181 * MINUTE)
    assert [(a.kind, a.subject) for a in found if a.kind == "auth_failure_spike"] == [
        ("auth_failure_spike", "route:orders")]


def test_nothing_is_flagged_during_warm_up_even_for_a_spike() -> None:
    detector, rng = AnomalyDetector(DetectorSettings(warmup_windows=30)), random.Random(5)
    assert run(detector, rng, range(10)) == []
    normal_minute(detector, rng, 10, rate=1000)
    assert detector.close_window(11 * MINUTE) == []


def test_a_quiet_subject_needs_a_real_count_before_a_spike_counts() -> None:
    detector = AnomalyDetector()
    for minute in range(60):
        detector.observe("rare", None, 200, 0.01)  # one request a minute
        assert detector.close_window((minute + 1) * MINUTE) == []
    for _ in range(5):
        detector.observe("rare", None, 200, 0.01)  # five times its mean, still below min_requests
    assert detector.close_window(61 * MINUTE) == []


def test_made_up_consumers_cannot_grow_memory_past_the_cap() -> None:
    detector = AnomalyDetector(DetectorSettings(max_subjects=100))
    for minute in range(3):
        for i in range(1000):
            detector.observe(None, f"c{minute}-{i}", 401, 0.001)
        detector.close_window((minute + 1) * MINUTE)
    assert detector.subjects == 100 and detector.subjects_dropped > 0


def test_an_egress_endpoint_gets_its_own_baseline_and_its_error_spike_is_flagged() -> None:
    detector, rng = AnomalyDetector(), random.Random(11)
    for minute in range(120):
        for _ in range(50):
            detector.observe_egress("openai", 500 if rng.random() < 0.02 else 200, rng.uniform(0.2, 0.6))
        assert detector.close_window((minute + 1) * MINUTE) == []
    for i in range(50):
        detector.observe_egress("openai", 502 if i % 3 == 0 else 200, 0.4)  # the provider is failing
    assert [(a.kind, a.subject) for a in detector.close_window(121 * MINUTE)] == [
        ("error_rate_spike", "egress:openai")]


def egress_minute(detector: AnomalyDetector, rng: random.Random, minute: int, *, calls: float = 30.0,
                  share: float = 0.001) -> None:
    """An agent's egress traffic: ``calls`` a minute (noisy, daily drift), each burning ``share`` of a budget."""
    drift = 1 + 0.3 * math.sin(2 * math.pi * minute / DAY)
    for _ in range(max(0, round(rng.gauss(calls * drift, math.sqrt(calls * drift))))):
        detector.observe_egress("openai", 200, rng.uniform(0.2, 0.6), burned=share * rng.uniform(0.5, 1.5),
                                consumer="agent-7")


@pytest.mark.parametrize("seed", [1, 2])
def test_steady_budget_burn_over_a_simulated_day_raises_no_alert(seed: int) -> None:
    detector, rng = AnomalyDetector(), random.Random(seed)
    for minute in range(DAY):
        egress_minute(detector, rng, minute)
        assert detector.close_window((minute + 1) * MINUTE) == [], minute


def test_calls_that_turn_expensive_are_flagged_as_budget_burn_for_the_endpoint_and_the_consumer() -> None:
    detector, rng = AnomalyDetector(), random.Random(3)
    for minute in range(120):
        egress_minute(detector, rng, minute)
        assert detector.close_window((minute + 1) * MINUTE) == []
    egress_minute(detector, rng, 120, share=0.01)  # same call volume, ten times the cost per call
    found = detector.close_window(121 * MINUTE)
    assert {(a.kind, a.subject) for a in found} == {("budget_burn_spike", "egress:openai"),
                                                     ("budget_burn_spike", "consumer:agent-7")}
    assert all(a.observed > 3 * a.expected for a in found)


def test_burn_below_the_minimum_share_is_not_flagged_however_sharp_the_rise() -> None:
    detector = AnomalyDetector()
    for minute in range(60):
        detector.observe_egress("cheap", 200, 0.1, burned=0.0001)
        assert detector.close_window((minute + 1) * MINUTE) == []
    for _ in range(15):  # a 450-fold rise, still under 5 % of a budget in the window
        detector.observe_egress("cheap", 200, 0.1, burned=0.003)
    assert detector.close_window(61 * MINUTE) == []
    for _ in range(15):  # the same calls at 0.004 each: 6 % of a budget, flagged
        detector.observe_egress("cheap", 200, 0.1, burned=0.004)
    assert [a.kind for a in detector.close_window(62 * MINUTE)] == ["budget_burn_spike"]
