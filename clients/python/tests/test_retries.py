"""Retries, against a scripted TokenBroker (an in-process gRPC server with the development PKI's
server certificate): UNAVAILABLE is retried with backoff, RESOURCE_EXHAUSTED waits for its
RetryInfo, and the broker's ErrorInfo reaches the exception. The client's sleep is recorded, not
slept."""

import datetime as dt
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tableau_token_broker import BrokerClient, BrokerError, RetryPolicy
from tableau_token_broker._proto.v1 import broker_pb2 as pb
from tableau_token_broker._proto.v1 import broker_pb2_grpc as pb_grpc


def status(code, message, reason, retry_after=None):
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="tableau-token-broker",
                                          metadata={"tableau_code": "429000"}))
    details.append(info)
    if retry_after is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after)))
        details.append(retry)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


UNAVAILABLE = ("unavailable", code_pb2.UNAVAILABLE, "Tableau for site \"finance\" is unavailable", "TABLEAU_UNAVAILABLE", None)
LIMITED = ("limited", code_pb2.RESOURCE_EXHAUSTED, "sign-in budget used", "SIGN_IN_RATE_LIMITED", 2)
LIMITED_NO_HINT = ("limited", code_pb2.RESOURCE_EXHAUSTED, "no hint", "SITE_SIGN_INS_BUSY", None)


class Scripted(pb_grpc.TokenBrokerServicer):
    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def GetCredentials(self, request, context):
        self.calls += 1
        if self.script:
            _, code, message, reason, retry_after = self.script.pop(0)
            context.abort_with_status(status(code, message, reason, retry_after))
        expires = timestamp_pb2.Timestamp()
        expires.FromDatetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
        return pb.GetCredentialsResponse(token="t" * 32, site_luid="luid", server_url="https://x",
                                         api_version="3.22", expires_at=expires, scopes=request.scopes)


@pytest.fixture
def scripted(system):
    pki = system.state / "pki"
    servers = []

    def start(script):
        servicer = Scripted(script)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_TokenBrokerServicer_to_server(servicer, server)
        creds = grpc.ssl_server_credentials(
            [((pki / "server.key").read_bytes(), (pki / "server.crt").read_bytes())],
            root_certificates=(pki / "ca.crt").read_bytes(), require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(None)


def client_for(system, addr, slept, **kwargs):
    cert, key = system.cert("renderer")
    return BrokerClient(addr, cert, key, system.ca, sleep=slept.append, **kwargs)


def test_unavailable_is_retried_with_backoff_and_retry_info_is_waited_for(system, scripted):
    servicer, addr = scripted([UNAVAILABLE, UNAVAILABLE, LIMITED])
    slept = []
    with client_for(system, addr, slept) as client:
        creds = client.credentials("finance", "u", ["tableau:content:read"])
    assert creds.token == "t" * 32 and servicer.calls == 4
    policy = RetryPolicy()
    assert 0 <= slept[0] <= policy.initial_backoff
    assert 0 <= slept[1] <= policy.initial_backoff * policy.multiplier
    assert slept[2] == 2.0  # RetryInfo's delay, exactly


def test_errors_without_a_retry_hint_or_past_the_attempts_are_raised(system, scripted):
    servicer, addr = scripted([LIMITED_NO_HINT])
    slept = []
    with client_for(system, addr, slept) as client:
        with pytest.raises(BrokerError) as limited:
            client.credentials("finance", "u", ["tableau:content:read"])
    assert servicer.calls == 1 and slept == []
    e = limited.value
    assert e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and e.reason == "SITE_SIGN_INS_BUSY"
    assert e.metadata == {"tableau_code": "429000"} and e.retry_delay is None

    servicer, addr = scripted([UNAVAILABLE] * 5)
    slept = []
    with client_for(system, addr, slept, retry=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(BrokerError) as unavailable:
            client.credentials("finance", "u", ["tableau:content:read"])
    assert servicer.calls == 3 and len(slept) == 2
    assert unavailable.value.reason == "TABLEAU_UNAVAILABLE"
