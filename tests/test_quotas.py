"""serve/quotas.py, pure Python (issue 29, mutation testing): key ids, the policy file's
checks and messages, and the concurrency and token-bucket quotas on a test clock."""

from __future__ import annotations

import hashlib
import json

import pytest

from mmntp.serve.quotas import (
    ANONYMOUS,
    ENV_VAR,
    Admission,
    AdmissionConfig,
    KeyPolicy,
    QuotaExceeded,
    key_id,
)

ID = "k-" + "0" * 16


def test_key_id_is_a_prefix_of_the_sha256_and_no_key_is_anonymous():
    assert key_id("secret") == "k-" + hashlib.sha256(b"secret").hexdigest()[:16]
    assert len(key_id("secret")) == 18
    assert key_id(None) == key_id("") == ANONYMOUS == "anonymous"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"priority": 1.5}, "priority must be an integer, got 1.5"),
        ({"max_concurrent": True}, "max_concurrent must be an integer, got True"),
        ({"burst": "2"}, "burst must be an integer, got '2'"),
        ({"priority": 2**31}, f"priority must fit in 32 bits, got {2**31}"),
        ({"priority": -(2**31) - 1}, f"priority must fit in 32 bits, got {-(2**31) - 1}"),
        ({"max_concurrent": -1}, "max_concurrent and burst must be >= 0"),
        ({"burst": -1}, "max_concurrent and burst must be >= 0"),
        ({"rate": -0.5}, "rate must be a number >= 0, got -0.5"),
        ({"rate": True}, "rate must be a number >= 0, got True"),
        ({"rate": "1"}, "rate must be a number >= 0, got '1'"),
        ({"rate": float("nan")}, "rate must be a number >= 0, got nan"),
        ({"rate": float("inf")}, "rate must be finite, got inf"),
    ],
)
def test_a_bad_policy_value_is_named(settings, message):
    with pytest.raises(ValueError) as err:
        KeyPolicy(**settings)
    assert str(err.value) == message


def test_policy_bounds_that_are_allowed():
    KeyPolicy(priority=-(2**31), max_concurrent=0, burst=0, rate=0)
    KeyPolicy(priority=2**31 - 1, rate=2)  # an int rate is a number too


def test_the_bucket_holds_burst_calls_or_the_rate_rounded_up():
    assert KeyPolicy(rate=2.5).bucket_size == 3.0
    assert KeyPolicy(rate=0.2).bucket_size == 1.0
    assert KeyPolicy(rate=2.0, burst=5).bucket_size == 5.0


def test_the_policies_file_is_checked_with_where_and_what():
    def refused(data, message):
        with pytest.raises(ValueError) as err:
            AdmissionConfig.from_dict(data)
        assert str(err.value) == message

    refused([], "key policies: must be a JSON object")
    refused({"defaults": {}}, "key policies: unknown settings ['defaults']")
    refused({"keys": []}, "key policies: keys must be an object of key id -> policy")
    refused({"default": 3}, "key policies: default: must be an object, got int")
    refused({"keys": {ID: {"prio": 1}}}, f"key policies: keys.{ID}: unknown settings ['prio']")
    refused(
        {"keys": {ID: {"burst": -2}}},
        f"key policies: keys.{ID}.max_concurrent and burst must be >= 0",
    )
    for name in ("k-" + "0" * 15, "k-" + "0" * 17, "x-" + "0" * 16):
        with pytest.raises(ValueError, match=r"is not a key id: name keys by key_id\(KEY\)"):
            AdmissionConfig.from_dict({"keys": {name: {}}})
    for name in ("idle_stream_seconds", "retry_after_seconds"):
        for bad in (0, -1, float("inf"), True, "1"):
            with pytest.raises(ValueError) as err:
                AdmissionConfig.from_dict({name: bad})
            assert str(err.value) == f"{name} must be a positive number, got {bad!r}"


def test_a_policies_file_reads_every_setting(tmp_path, monkeypatch):
    data = {
        "idle_stream_seconds": 5,
        "retry_after_seconds": 0.25,
        "default": {"priority": 2},
        "keys": {ID: {"priority": -1, "max_concurrent": 3, "rate": 1.5, "burst": 2}},
    }
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(data))
    config = AdmissionConfig.load(path)
    assert (config.idle_stream_seconds, config.retry_after_seconds) == (5, 0.25)
    assert config.policy(ID) == KeyPolicy(priority=-1, max_concurrent=3, rate=1.5, burst=2)
    assert config.policy("k-" + "1" * 16) == KeyPolicy(priority=2)
    assert AdmissionConfig.from_env({ENV_VAR: f" {path} "}) == config
    assert AdmissionConfig.from_env({ENV_VAR: "  "}) == AdmissionConfig()
    monkeypatch.setenv(ENV_VAR, str(path))
    assert AdmissionConfig.from_env() == config
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"^key policies {path}: Expecting property name"):
        AdmissionConfig.load(path)
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=f"^key policies {missing}: .*No such file"):
        AdmissionConfig.load(missing)
    assert AdmissionConfig() == AdmissionConfig(idle_stream_seconds=30.0, retry_after_seconds=1.0)


def admission(now, **policy) -> Admission:
    config = AdmissionConfig(keys={ID: KeyPolicy(**policy)}, retry_after_seconds=0.75)
    return Admission(config, clock=lambda: now[0])


def test_concurrency_quota_counts_calls_in_flight():
    gate = admission([0.0], max_concurrent=2)
    assert gate.admit(ID) == KeyPolicy(max_concurrent=2)
    gate.admit(ID)
    with pytest.raises(QuotaExceeded) as err:
        gate.admit(ID)
    e = err.value
    assert str(e) == f"key {ID} has 2 calls in flight (max_concurrent=2)"
    assert (e.reason, e.retry_after) == ("concurrency", 0.75)
    assert gate.in_flight(ID) == 2
    gate.release(ID)
    assert gate.in_flight(ID) == 1
    gate.release(ID), gate.release(ID), gate.release(ID)  # never below zero
    assert gate.in_flight(ID) == 0
    gate.release("k-" + "9" * 16)  # a key never admitted: nothing to release
    assert gate.in_flight("k-" + "9" * 16) == 0


def test_an_unlimited_key_is_never_refused():
    gate = Admission(AdmissionConfig(), clock=lambda: 0.0)
    for _ in range(100):
        gate.admit(ANONYMOUS)
    assert gate.in_flight(ANONYMOUS) == 100


def test_the_token_bucket_refills_at_the_rate_up_to_its_size():
    now = [10.0]
    gate = admission(now, rate=2.0, burst=3)
    for _ in range(3):
        gate.admit(ID)  # the full bucket
    with pytest.raises(QuotaExceeded) as err:
        gate.admit(ID)
    e = err.value
    assert str(e) == f"key {ID} is over its rate (rate=2/s, burst=3)"
    assert e.reason == "rate" and e.retry_after == pytest.approx(0.5)
    now[0] = 10.25  # half a call refilled
    with pytest.raises(QuotaExceeded) as err:
        gate.admit(ID)
    assert err.value.retry_after == pytest.approx(0.25)  # the wait left, not the whole
    now[0] = 10.5
    gate.admit(ID)  # one call's worth
    now[0] = 100.0  # a long pause fills the bucket, no more than its size
    for _ in range(3):
        gate.admit(ID)
    with pytest.raises(QuotaExceeded):
        gate.admit(ID)
    now[0] = 99.0  # a clock that goes back refills nothing
    with pytest.raises(QuotaExceeded):
        gate.admit(ID)


def test_a_new_key_starts_with_a_full_bucket_at_the_time_it_is_first_seen():
    now = [50.0]
    gate = admission(now, rate=1.0)  # bucket of 1
    gate.admit(ID)
    now[0] = 50.5
    with pytest.raises(QuotaExceeded) as err:
        gate.admit(ID)
    assert err.value.retry_after == pytest.approx(0.5)


def test_a_secret_used_as_a_key_name_is_refused_without_being_repeated(tmp_path):
    with pytest.raises(ValueError) as err:
        AdmissionConfig.from_dict({"keys": {"my-secret-key": {}}})
    assert str(err.value) == (
        "key policies: keys.my-s... is not a key id: name keys by key_id(KEY) "
        "(k- and 16 hex digits), never by the key itself"
    )
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"colour": 1}))
    with pytest.raises(ValueError) as err:
        AdmissionConfig.load(path)
    assert str(err.value) == f"key policies {path}: unknown settings ['colour']"
    assert AdmissionConfig.from_env({}) == AdmissionConfig()  # no file named: defaults


# -- moved from tests/reliability/test_admission.py (one home for the pure quota tests) --


def test_concurrency_and_token_bucket_quotas():
    now = [0.0]
    config = AdmissionConfig(
        keys={
            key_id("a"): KeyPolicy(max_concurrent=2),
            key_id("b"): KeyPolicy(rate=2.0, burst=2),
        }
    )
    admission = Admission(config, clock=lambda: now[0])
    a = key_id("a")
    admission.admit(a), admission.admit(a)
    with pytest.raises(QuotaExceeded, match="max_concurrent=2") as err:
        admission.admit(a)
    assert err.value.reason == "concurrency" and err.value.retry_after == 1.0
    admission.release(a)
    admission.admit(a)
    b = key_id("b")
    admission.admit(b), admission.admit(b)  # the burst
    with pytest.raises(QuotaExceeded, match=r"rate=2/s") as err:
        admission.admit(b)
    assert err.value.retry_after == pytest.approx(0.5)
    now[0] = 0.5  # one token refilled
    admission.admit(b)
    assert admission.in_flight(b) == 3  # the rate quota does not bound concurrency


def test_policies_name_keys_by_id_never_by_secret(tmp_path):
    path = tmp_path / "policies.json"
    path.write_text(json.dumps({"keys": {"my-secret-key": {"priority": 1}}}))
    with pytest.raises(ValueError, match="not a key id") as err:
        AdmissionConfig.load(path)
    assert "my-secret-key" not in str(err.value)
    path.write_text(json.dumps({"default": {"max_concurrent": -1}}))
    with pytest.raises(ValueError, match="max_concurrent"):
        AdmissionConfig.load(path)
    assert key_id("my-secret-key").startswith("k-") and "secret" not in key_id("my-secret-key")
