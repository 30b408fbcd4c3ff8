"""Two engines over an impaired simulated link (tests/engine/simlink.py).

Property: whatever the impairment schedule (loss 0-30 %, duplication, reordering,
delay/jitter, checksum-caught corruption), the bytes each side receives are exactly the
bytes the other sent, in order (SHA-256 compared), and both connections end in CLOSED or
TIME_WAIT with no reset/timeout and no exception. Both congestion controllers, SACK and
timestamps on and off, and small buffers (flow control and zero windows) are covered.
Schedules come from hypothesis; every run is seeded and replayable from the failure text.
"""

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import simlink as SL

FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _blob(seed: int, n: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


phases = st.builds(
    SL.Phase,
    duration=st.floats(0.2, 3.0),
    loss=st.floats(0.0, 0.3),
    corrupt=st.sampled_from([0.0, 0.0, 0.02, 0.05]),
    dup=st.sampled_from([0.0, 0.0, 0.05, 0.2]),
    reorder=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    reorder_delay=st.floats(0.001, 0.08),
    delay=st.floats(0.001, 0.05),
    jitter=st.sampled_from([0.0, 0.0, 0.002, 0.01]),
)
# a short blackout (everything lost) exercises RTO backoff and recovery from it
blackouts = st.builds(SL.Phase, duration=st.floats(0.05, 2.0), loss=st.just(1.0),
                      delay=st.floats(0.001, 0.05))
schedules = st.lists(st.one_of(phases, phases, phases, blackouts), min_size=1,
                     max_size=4).filter(lambda s: s[-1].loss < 1.0)


def _check(res, a_data, b_data):
    res.check()
    assert res.bytes_ab == len(a_data) and res.bytes_ba == len(b_data)


def _run(seed, schedule, a_data, b_data, cc="newreno", sack=True, ts=True, extra=None,
         **kw):
    cfg = dict(SL.ROBUST_CONFIG, cc=cc, sack=sack, timestamps=ts)
    if extra:
        cfg.update(extra)
    return SL.run(seed=seed, schedule=schedule, a_data=a_data, b_data=b_data,
                  a_config=cfg, b_config=cfg, **kw)


def test_clean_link_both_ways():
    a, b = _blob(1, 300_000), _blob(2, 200_000)
    res = _run(1, [SL.Phase(delay=0.01)], a, b)
    _check(res, a, b)
    assert res.stats_ab["lost"] == 0


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
@pytest.mark.parametrize("sack,ts", [(True, True), (False, False), (True, False),
                                     (False, True)])
def test_fixed_loss_matrix(cc, sack, ts):
    a, b = _blob(3, 60_000), _blob(4, 30_000)
    res = _run(7, [SL.Phase(loss=0.1, dup=0.05, reorder=0.1, delay=0.01)], a, b, cc=cc,
               sack=sack, ts=ts)
    _check(res, a, b)


def test_deterministic_replay():
    a, b = _blob(5, 40_000), _blob(6, 40_000)
    sched = [SL.Phase(loss=0.15, dup=0.1, reorder=0.2, delay=0.02, jitter=0.005)]
    r1 = _run(11, sched, a, b)
    r2 = _run(11, sched, a, b)
    _check(r1, a, b)
    assert (r1.steps, r1.virtual_time, r1.stats_ab, r1.stats_ba) == \
        (r2.steps, r2.virtual_time, r2.stats_ab, r2.stats_ba)


def test_time_wait_expires_and_table_empties():
    a, b = _blob(7, 20_000), _blob(8, 20_000)
    res = _run(3, [SL.Phase(loss=0.05, delay=0.01)], a, b, settle=True)
    _check(res, a, b)
    assert res.settled, "timers still armed after both sides closed:\n" + res.describe()
    assert res.a_state == "CLOSED" and res.b_state == "CLOSED", res.describe()


@FAST
@given(seed=st.integers(0, 2**32 - 1), schedule=schedules,
       a_len=st.integers(0, 1_000_000), b_len=st.integers(0, 500_000),
       cc=st.sampled_from(["newreno", "cubic"]), sack=st.booleans(), ts=st.booleans(),
       b_waits=st.booleans(), schedule_ba=st.one_of(st.none(), schedules))
def test_impaired_link_streams_identical(seed, schedule, a_len, b_len, cc, sack, ts,
                                         b_waits, schedule_ba):
    """The main property; the reverse direction gets its own schedule half the time."""
    a, b = _blob(seed, a_len), _blob(seed + 1, b_len)
    res = _run(seed, schedule, a, b, cc=cc, sack=sack, ts=ts, b_waits_eof=b_waits,
               schedule_ba=schedule_ba)
    _check(res, a, b)


@settings(FAST, max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), schedule=schedules,
       rcvbuf=st.sampled_from([1000, 2920, 4096, 8192]),
       sndbuf=st.sampled_from([1000, 3000, 8192]),
       chunk=st.sampled_from([1, 100, 1460, 5000]),
       cc=st.sampled_from(["newreno", "cubic"]), sack=st.booleans())
def test_small_buffers_flow_control(seed, schedule, rcvbuf, sndbuf, chunk, cc, sack):
    a, b = _blob(seed, 50_000), _blob(seed + 1, 10_000)
    res = _run(seed, schedule, a, b, cc=cc, sack=sack,
               extra=dict(rcvbuf=rcvbuf, sndbuf=sndbuf), app_chunk=chunk)
    _check(res, a, b)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), loss=st.floats(0, 0.2),
       bandwidth=st.sampled_from([20_000, 100_000, 1_000_000]),
       queue=st.sampled_from([4, 16, 64]), cc=st.sampled_from(["newreno", "cubic"]))
def test_bottleneck_queue(seed, loss, bandwidth, queue, cc):
    """A bandwidth-limited link with a short tail-drop queue: losses come in bursts from
    the sender's own queue overflow; streams must still be intact."""
    a, b = _blob(seed, 150_000), _blob(seed + 1, 5_000)
    res = _run(seed, [SL.Phase(loss=loss, delay=0.01)], a, b, cc=cc, bandwidth=bandwidth,
               queue=queue)
    _check(res, a, b)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), mutate=st.floats(0.01, 0.3),
       loss=st.floats(0, 0.1), sack=st.booleans(), ts=st.booleans())
def test_undetected_corruption_is_survived(seed, mutate, loss, sack, ts):
    """Corruption that a checksum would NOT catch (checksums off): one header field,
    option or payload byte is changed and delivered. TCP cannot promise the bytes then;
    the engine must not raise, must not hang, and must end every connection (cleanly,
    or by RST / time-out) within the time limit. Keepalive is on: a corrupted ACK number
    can make one side give up (its RST lost on the link) while the other waits for data
    with nothing in flight, which only keepalive ends, in any TCP."""
    a, b = _blob(seed, 20_000), _blob(seed + 1, 20_000)
    cfg = dict(SL.ROBUST_CONFIG, sack=sack, timestamps=ts, retries=6, rto_max=2.0,
               keepalive=True, keepalive_idle=30.0, keepalive_interval=10.0,
               keepalive_count=3)
    res = SL.run(seed=seed, schedule=[SL.Phase(loss=loss, mutate=mutate, delay=0.01)],
                 a_data=a, b_data=b, a_config=cfg, b_config=cfg, time_limit=900)
    assert res.error is None or not res.error.startswith(("exception", "step limit",
                                                          "deadlock")), res.describe()
    if res.error and res.error.startswith("virtual time limit"):
        pytest.fail("no progress and no give-up within 900 s:\n" + res.describe())


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**32 - 1), schedule=schedules,
       a_len=st.integers(0, 2_000_000), b_len=st.integers(0, 1_000_000),
       cc=st.sampled_from(["newreno", "cubic"]), sack=st.booleans(), ts=st.booleans(),
       b_waits=st.booleans())
def test_impaired_link_heavy(seed, schedule, a_len, b_len, cc, sack, ts, b_waits):
    a, b = _blob(seed, a_len), _blob(seed + 1, b_len)
    res = _run(seed, schedule, a, b, cc=cc, sack=sack, ts=ts, b_waits_eof=b_waits)
    _check(res, a, b)
