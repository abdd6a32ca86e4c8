"""Refresh ahead: with min_remaining, the client takes a new token before the old one reaches
its min_remaining point, in the background, while callers keep getting the old one.

The `short` site hands tokens out for 60s (session_ttl 70s, safety margin 10s). With
min_remaining=50s a token's last use is 10s after it was fetched; the client refreshes it at half
that, 5s after the fetch. The test waits for that refresh (an event), not for a time."""


from ttb_testing import READ, USER, Counting


def test_refresh_ahead_takes_a_new_token_before_min_remaining(system):
    counting = Counting()
    signins = system.double_stats()["signins_ok"]
    with system.client(interceptors=[counting], refresh_ahead=5) as client:
        old = client.credentials("short", USER, [READ], min_remaining=50)
        last_use = old.expires_at.timestamp() - 50

        done = counting.wait_finished("GetCredentials", 2, timeout=60)

        assert done[1] < last_use, f"refreshed {done[1] - last_use:.1f}s after the min_remaining point"
        new = client.credentials("short", USER, [READ], min_remaining=50)
        assert new.token != old.token
        assert new.expires_at > old.expires_at
        assert counting.started["GetCredentials"] == 2, counting.started
    assert system.double_stats()["signins_ok"] >= signins + 2
