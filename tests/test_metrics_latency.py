"""The latency histograms observe the right intervals: time to first chunk from arrival,
inter-chunk latency from the previous chunk (not from arrival), end to end from arrival.
A fake clock makes every observed value exact."""

import types

import pytest

from mmntp.serve import metrics as metrics_module
from mmntp.serve.metrics import ServiceMetrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    # the module reads time.monotonic() when a chunk is sent and when the call ends
    monkeypatch.setattr(metrics_module, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def _value(m: ServiceMetrics, name: str, **labels) -> float:
    value = m.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_inter_chunk_latency_is_measured_from_the_previous_chunk(clock):
    m = ServiceMetrics()
    rec = m.track("r1", "text")
    rec.arrival = clock.now  # 100.0
    since = []
    for t in (101.0, 101.5, 103.5, 103.6):  # chunks: gaps 0.5, 2.0, 0.1
        clock.now = t
        since.append(rec.sent())
    assert since == pytest.approx([1.0, 1.5, 3.5, 3.6])
    clock.now = 104.0
    rec.finish("OK")

    ttfc = "mmntp_time_to_first_chunk_seconds"
    assert _value(m, f"{ttfc}_count", modality="text") == 1
    assert _value(m, f"{ttfc}_sum", modality="text") == pytest.approx(1.0)

    ic = "mmntp_inter_chunk_latency_seconds"
    assert _value(m, f"{ic}_count", modality="text") == 3
    assert _value(m, f"{ic}_sum", modality="text") == pytest.approx(0.5 + 2.0 + 0.1)
    buckets = {
        le: _value(m, f"{ic}_bucket", modality="text", le=le) for le in ("0.1", "0.5", "1.0", "2.5")
    }
    assert buckets == {"0.1": 1, "0.5": 2, "1.0": 2, "2.5": 3}

    e2e = "mmntp_e2e_latency_seconds"
    assert _value(m, f"{e2e}_count", modality="text") == 1
    assert _value(m, f"{e2e}_sum", modality="text") == pytest.approx(4.0)
    assert _value(m, "mmntp_requests_total", modality="text", status="OK") == 1


def test_one_chunk_observes_no_inter_chunk_latency(clock):
    m = ServiceMetrics()
    rec = m.track("r2", "timeseries")
    rec.arrival = clock.now
    clock.now += 0.25
    assert rec.sent() == pytest.approx(0.25)
    rec.finish("OK")
    rec.finish("OK")  # a second finish records nothing more
    ic = "mmntp_inter_chunk_latency_seconds"
    assert _value(m, f"{ic}_count", modality="timeseries") == 0
    assert _value(m, "mmntp_e2e_latency_seconds_count", modality="timeseries") == 1
    assert _value(m, "mmntp_time_to_first_chunk_seconds_sum", modality="timeseries") == 0.25


def test_streams_do_not_share_their_previous_chunk(clock):
    """Two interleaved streams: each one's gap is to its own previous chunk."""
    m = ServiceMetrics()
    a, b = m.track("a", "text"), m.track("b", "text")
    a.arrival = b.arrival = clock.now
    for t, rec in ((100.1, a), (100.2, b), (100.3, a), (101.2, b)):
        clock.now = t
        rec.sent()
    ic = "mmntp_inter_chunk_latency_seconds"
    assert _value(m, f"{ic}_sum", modality="text") == pytest.approx(0.2 + 1.0)
