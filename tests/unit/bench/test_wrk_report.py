"""The benchmark's reading of wrk's report: the figures the results and the goals are built from."""

from __future__ import annotations

import pytest
from bench.wrk import parse_wrk

WRK_OUTPUT = """Running 8s test @ http://127.0.0.1:40001/api/items/42?view=full
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.05ms    2.11ms  41.02ms   91.20%
    Req/Sec     4.83k   210.11     5.10k    88.00%
  Latency Distribution
     50%   10.05ms
     75%   10.80ms
     90%   11.90ms
     99%   19.16ms
  38480 requests in 8.00s, 12.10MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   4810.00
Transfer/sec:      1.51MB
"""


def test_a_saturation_report_is_read_whole() -> None:
    r = parse_wrk(WRK_OUTPUT, connections=50)
    assert (r.requests, r.rps, r.duration_s) == (38480, 4810.0, 8.0)
    assert (r.p50_ms, r.p99_ms) == (10.05, 19.16)
    assert (r.non_2xx_3xx, r.socket_errors) == (7, 6)


def test_microsecond_and_second_latencies_are_converted_to_ms() -> None:
    text = WRK_OUTPUT.replace("50%   10.05ms", "50%  224.00us").replace("99%   19.16ms", "99%    1.20s")
    r = parse_wrk(text, connections=1)
    assert (r.p50_ms, r.p99_ms) == (pytest.approx(0.224), 1200.0)


def test_a_report_without_latency_figures_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", connections=50)


def test_the_95th_percentile_is_read_from_the_done_hooks_line_when_present() -> None:
    assert parse_wrk(WRK_OUTPUT, connections=10).p95_ms is None
    assert parse_wrk(WRK_OUTPUT + "p95_us 15230\n", connections=10).p95_ms == pytest.approx(15.23)
