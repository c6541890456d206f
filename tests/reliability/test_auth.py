"""Authentication that fails closed, and TLS errors that name the problem (issue 29).

A blank key set refuses to start unless --allow-unauthenticated says an open server is
meant; an open server only starts on loopback without it; every GenerationService method
(not only Generate) needs a key; refusals are counted and logged rate-limited without the
key; keys over plaintext on a non-loopback address are warned about; a bad certificate is
named instead of gRPC's "Failed to bind to address".
"""

from __future__ import annotations

import asyncio
import datetime
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import ServerThread

from mmntp.cli import main
from mmntp.generation import Pipeline
from mmntp.serve.auth import FailureLog, load_api_keys
from mmntp.serve.server import ServeError, Server, ServerConfig, TlsFiles
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

SECRET = "wrong-key-5f0c2a9e"


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


# -- a blank key set ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", " , ", ",,", "  "])
def test_blank_env_key_set_is_refused_unless_allowed(raw):
    env = {"MMNTP_API_KEYS": raw}
    with pytest.raises(ValueError, match="holds no key.*--allow-unauthenticated"):
        load_api_keys(env=env)
    assert load_api_keys(env=env, allow_empty=True) == []
    assert load_api_keys(env={}) == []  # unset: no key source at all (loopback only)


def test_empty_keys_file_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# no keys yet\n\n")
    with pytest.raises(ValueError, match="holds no keys.*--allow-unauthenticated"):
        load_api_keys(path)
    assert load_api_keys(path, allow_empty=True) == []


def test_serve_with_a_blank_key_set_exits_before_loading(monkeypatch, capsys):
    def loaded(*args, **kwargs):
        raise ValueError("the model was loaded")

    monkeypatch.setattr(Pipeline, "from_pretrained", loaded)
    monkeypatch.setenv("MMNTP_API_KEYS", " , ")
    assert main(["serve", "--port", "0", "--no-warmup"]) == 2
    err = capsys.readouterr().err
    assert "MMNTP_API_KEYS is set but holds no key" in err and "loaded" not in err
    # --allow-unauthenticated gets past the keys (to the load, which fails here)
    assert main(["serve", "--port", "0", "--no-warmup", "--allow-unauthenticated"]) == 2
    assert "the model was loaded" in capsys.readouterr().err


def build(pipe, **kwargs) -> Server:
    async def make() -> Server:
        return Server(pipe, **kwargs)

    return asyncio.run(make())


def test_open_server_only_on_loopback_unless_allowed(pipe, caplog):
    with pytest.raises(ServeError, match="refusing to serve 0.0.0.0 without API keys"):
        build(pipe, config=ServerConfig(host="0.0.0.0", port=0))
    for host in ("127.0.0.1", "localhost", "::1"):
        build(pipe, config=ServerConfig(host=host, port=0))
    build(pipe, config=ServerConfig(host="0.0.0.0", port=0, allow_unauthenticated=True))
    assert any("no API keys configured" in r.getMessage() for r in caplog.records)


def test_keys_over_plaintext_on_a_public_address_warn(pipe, caplog):
    build(pipe, config=ServerConfig(host="127.0.0.1", port=0), api_keys=["k"])
    assert not [r for r in caplog.records if "plaintext" in r.getMessage()]
    build(pipe, config=ServerConfig(host="0.0.0.0", port=0), api_keys=["k"])
    (warning,) = [r for r in caplog.records if "plaintext" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "0.0.0.0" in warning.getMessage()


# -- every method needs a key; refusals are counted and logged rate-limited --------------

CALLS = {
    "ListModels": pb.ListModelsRequest(),
    "Tokenize": pb.TokenizeRequest(part=pb.PromptPart(text="hi")),
    "Detokenize": pb.DetokenizeRequest(modality=pb.MODALITY_TEXT, ids=[100]),
    "Generate": pb.GenerateRequest(
        prompt=[pb.PromptPart(text="a")], output=pb.OutputSpec(text=pb.TextSpec(max_tokens=2))
    ),
}


def call(stub, name: str, key: str | None):
    metadata = [] if key is None else [("authorization", f"Bearer {key}")]
    reply = getattr(stub, name)(CALLS[name], timeout=30, metadata=metadata)
    return list(reply) if name == "Generate" else reply


def test_every_generation_method_needs_a_key_and_refusals_are_counted(pipe, caplog):
    caplog.set_level(logging.INFO)
    with (
        ServerThread(pipe, api_keys=["k-one"]) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        for name in CALLS:
            for key in (None, SECRET, "k-on"):
                with pytest.raises(grpc.RpcError) as err:
                    call(stub, name, key)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, key)
                reason = "missing" if key is None else "invalid"
                hint = f"{reason} API key: send metadata 'authorization: Bearer KEY'"
                assert err.value.details() == hint, (name, key)
            assert call(stub, name, "k-one") is not None
        # with the key, each method answers with content, not just without an error
        assert call(stub, "ListModels", "k-one").models
        assert call(stub, "Tokenize", "k-one").ids
        assert [c for c in call(stub, "Generate", "k-one") if c.WhichOneof("chunk")]
        # health stays open: probes carry no secret
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        registry = srv.server.metrics.registry
        missing = registry.get_sample_value("mmntp_auth_failures_total", {"reason": "missing"})
        invalid = registry.get_sample_value("mmntp_auth_failures_total", {"reason": "invalid"})
        # the extra successful calls above are not counted as failures
        assert (missing, invalid) == (len(CALLS), 2 * len(CALLS))
    refusals = [r for r in caplog.records if "refused for authentication" in r.getMessage()]
    assert len(refusals) == 1  # twelve refusals within seconds: one line
    assert refusals[0].levelno == logging.WARNING
    latest = "(latest: missing API key, /mmntp.v1.GenerationService/ListModels)"
    assert refusals[0].getMessage().endswith(latest)
    assert all(SECRET not in r.getMessage() for r in caplog.records)  # never the key


def test_failure_log_writes_at_most_one_line_per_interval(caplog):
    now = [100.0]
    failures = FailureLog(every=10.0, clock=lambda: now[0])
    written = []
    for t in (0, 1, 5, 9.9, 10, 10.5, 30):
        now[0] = 100.0 + t
        written.append(failures.note("invalid API key", "/m"))
    assert written == [True, False, False, False, True, False, True]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("1 call(s) refused for authentication (latest")
    assert messages[1].startswith("4 call(s) refused for authentication in the last 10 s")
    assert messages[2].startswith("2 call(s) refused for authentication in the last 20 s")


# -- TLS errors name the problem -------------------------------------------------------------


def self_signed(directory, tag: str):
    """A throwaway RSA key and its self-signed certificate, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name.from_rfc4514_string(f"CN=localhost-{tag}")
    start = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder(
        issuer_name=subject,
        subject_name=subject,
        public_key=key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=start,
        not_valid_after=start + datetime.timedelta(hours=1),
    )
    pem_cert = builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)
    pem_key = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    cert_path, key_path = directory / f"cert-{tag}.pem", directory / f"key-{tag}.pem"
    cert_path.write_bytes(pem_cert)
    key_path.write_bytes(pem_key)
    return cert_path, key_path


def test_tls_problems_are_named(tmp_path):
    cert, key = self_signed(tmp_path, "a")
    other_cert, other_key = self_signed(tmp_path, "b")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nAAAA!!\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    cases = {
        (missing, key): f"cannot read TLS certificate {missing}: No such file",
        (cert, missing): f"cannot read TLS key {missing}",
        (junk, key): f"TLS certificate {junk} is not PEM",
        (cert, junk): f"TLS key {junk} is not a PEM private key",
        (cert, cert): f"TLS key {cert} is not a PEM private key",
        (cert, other_key): f"TLS key {other_key} does not match the certificate {cert}",
        (garbled, key): f"TLS certificate {garbled} does not parse",
    }
    for (c, k), message in cases.items():
        with pytest.raises(ServeError) as err:
            TlsFiles(c, k).check()
        assert str(err.value).startswith(message), (c.name, k.name, str(err.value))
    assert TlsFiles(other_cert, other_key).check()


def test_server_with_a_mismatched_key_fails_naming_it(pipe, tmp_path):
    cert, _ = self_signed(tmp_path, "a")
    _, other_key = self_signed(tmp_path, "b")
    with pytest.raises(ServeError, match="does not match the certificate"):
        ServerThread(pipe, tls=TlsFiles(cert, other_key))


def test_serve_with_a_bad_certificate_is_one_line(tmp_path, capfd):
    cert, _ = self_signed(tmp_path, "a")
    _, other_key = self_signed(tmp_path, "b")
    argv = ["serve", "--port", "0", "--no-warmup", "--tls-cert", str(cert)]
    assert main([*argv, "--tls-key", str(other_key)]) == 1
    err = capfd.readouterr().err
    assert "mmntp serve: error: TLS key" in err and "does not match" in err
    assert "Failed to bind" not in err and "Traceback" not in err


# -- the pieces, at their edges (mutation testing) ------------------------------------------


def test_the_refusal_to_start_says_how_to_start_open():
    with pytest.raises(ValueError) as err:
        load_api_keys(env={"MMNTP_API_KEYS": " , "})
    assert str(err.value).endswith(
        "or pass --allow-unauthenticated to serve without authentication"
    )


@pytest.mark.parametrize(
    ("text", "number"),
    [("k-one\nk two\n", 2), ("k-one\nk-2\nk\x07three\n", 3), ("bad\tkey\n", 1)],
)
def test_a_key_with_whitespace_or_unprintable_characters_is_refused(tmp_path, text, number):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_api_keys(path)
    assert str(err.value) == f"API key #{number} contains whitespace or unprintable characters"
    assert load_api_keys(env={"MMNTP_API_KEYS": "a-1, b-2"}) == ["a-1", "b-2"]


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer k-one", "k-one"),
        ("bearer  k-one ", "k-one"),  # scheme in any case, spaces around the token
        (b"Bearer k-one", "k-one"),
        (b"Bearer k-\xff", "k-\ufffd"),  # undecodable bytes: replaced, never an exception
        ("Basic k-one", None),
        ("Bearer ", None),
        ("k-one", None),
    ],
)
def test_bearer_token_reads_only_a_bearer_scheme(value, token):
    from mmntp.serve.auth import bearer_token

    assert bearer_token([("x-other", "Bearer no"), ("authorization", value)]) == token


def test_refusals_are_logged_every_ten_seconds_by_default_with_reason_and_method(caplog):
    from mmntp.serve.auth import ApiKeyInterceptor

    now = [0.0]
    failures = FailureLog(clock=lambda: now[0])
    assert failures.note("invalid API key", "/svc/M")
    now[0] = 9.9
    assert not failures.note("invalid API key", "/svc/M")
    now[0] = 10.0
    assert failures.note("missing API key", "/svc/N")
    assert caplog.records[-1].getMessage().endswith("(latest: missing API key, /svc/N)")
    assert ApiKeyInterceptor(["k"]).failures.every == 10.0
    with pytest.raises(ValueError, match="^ApiKeyInterceptor needs at least one key$"):
        ApiKeyInterceptor([])


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code, message):
        self.code, self.message = code, message
        raise _Aborted


@pytest.mark.parametrize("shape", [(False, False), (False, True), (True, False), (True, True)])
def test_a_refusal_keeps_the_method_s_shape_and_aborts_unauthenticated(shape):
    """Every gRPC method shape, client-streaming ones too (this service has none, an
    interceptor protecting another service may): same shape, UNAUTHENTICATED with the hint."""
    from mmntp.serve.auth import _refusal

    async def behaviour(request, context):  # pragma: no cover - replaced by the refusal
        raise AssertionError("the method ran")

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[shape]
    refusal = _refusal(make(behaviour), "missing API key: send metadata")
    assert (refusal.request_streaming, refusal.response_streaming) == shape
    run = refusal.unary_unary or refusal.unary_stream or refusal.stream_unary
    run = run or refusal.stream_stream
    context = _Context()

    async def call():
        result = run(None, context)
        if shape[1]:
            async for _ in result:
                pass
        else:
            await result

    with pytest.raises(_Aborted):
        asyncio.run(call())
    assert context.code == grpc.StatusCode.UNAUTHENTICATED
    assert context.message == "missing API key: send metadata"
