"""The asyncio client: the same calls, errors and single flight on grpc.aio."""

import asyncio

import grpc
import pytest
from ttb_testing import DOWNLOAD, FINANCE_LUID, OPS, READ, RENDERER, USER, AioCounting, CountingClock

from tableau_token_broker import BrokerError


def run(coro):
    return asyncio.run(coro)


def test_aio_calls_and_errors(system):
    async def main():
        async with system.aio_client() as client:
            creds = await client.credentials("finance", USER, [READ])
            assert creds.site_luid == FINANCE_LUID and creds.token not in repr(creds)
            assert await client.credentials("finance", USER, [READ]) is creds
            assert (await client.whoami()).identity == RENDERER
            assert (await client.mint_jwt("finance", USER, [READ])).jti
            assert (await client.resolve_scopes(methods=["Query Projects"])).required_scopes == (READ,)
            with pytest.raises(BrokerError) as refused:
                await client.credentials("finance", USER, ["tableau:users:read"])
            assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.reason == "SCOPE_NOT_ALLOWED"
            renewed = await client.renew("finance", USER, [READ], creds.token)
            assert renewed.token != creds.token

    run(main())


def test_aio_fifty_concurrent_tasks_of_one_key_cause_one_rpc(system):
    async def main():
        clock = CountingClock()
        arrived = asyncio.Event()

        async def gate(method):
            if method == "GetCredentials":
                await arrived.wait()  # all 50 tasks have decided while this call is in flight

        counting = AioCounting(gate)
        before = system.rpcs("GetCredentials")
        async with system.aio_client(interceptors=[counting], clock=clock) as client:
            async def call():
                return await client.credentials("finance", USER, [READ, DOWNLOAD], min_remaining=60)

            tasks = [asyncio.ensure_future(call()) for _ in range(50)]
            while clock.calls < 50:  # each task reads the clock once before it waits
                await asyncio.sleep(0)
            arrived.set()
            results = await asyncio.gather(*tasks)
        assert len({c.token for c in results}) == 1
        assert counting.started["GetCredentials"] == 1, counting.started
        assert system.rpcs("GetCredentials") == before + 1

    run(main())


def test_aio_reads_a_swapped_certificate(system, tmp_path):
    cert, key = tmp_path / "svid.crt", tmp_path / "svid.key"
    rcert, rkey = system.cert("renderer")
    ocert, okey = system.cert("ops")
    cert.write_bytes(open(rcert, "rb").read())
    key.write_bytes(open(rkey, "rb").read())

    async def main():
        from tableau_token_broker import aio

        async with aio.BrokerClient(system.addr, str(cert), str(key), system.ca, recheck_interval=3600) as client:
            assert (await client.whoami()).identity == RENDERER
            cert.write_bytes(open(ocert, "rb").read())
            key.write_bytes(open(okey, "rb").read())
            assert (await client.whoami()).identity == OPS

    run(main())
