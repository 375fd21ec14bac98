"""A token written to the token file (by hand, by scripts/vault-setup, or by a sidecar) is kept
alive by the plugin itself: no pod restart to pick up a renewed token (the original design's
pain). With `renew: false` the same token expires, which proves the renewal is what kept it."""
from __future__ import annotations

import json
import os
import time

import grpc

from test_core import rpc_error, wait_ok

TTL = "6s"


def short_token(bao) -> str:
    # Not periodic: a plain renewable TTL, capped well after the test ends.
    return bao.create_plugin_token(period="", ttl=TTL, explicit_max_ttl="5m")


def round_trips_for(pl, seconds: float) -> int:
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        seed = os.urandom(32)
        assert pl.decrypt(pl.encrypt(seed).ciphertext).plaintext == seed
        n += 1
        time.sleep(0.2)
    return n


def renew_events(pl) -> list[dict]:
    out = []
    for line in pl.stderr_text().splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("event") == "auth.renew":
            out.append(j)
    return out


def test_token_file_token_is_renewed_past_its_ttl(plugin_factory, bao):
    token = short_token(bao)
    bao.write_token_file(token)
    pl = plugin_factory.start()
    wait_ok(pl)
    n = round_trips_for(pl, 15)  # 2.5 TTLs
    assert n > 10
    renewed = [e for e in renew_events(pl) if e["msg"] == "token renewed"]
    assert len(renewed) >= 3, renew_events(pl)
    assert all(e["ttl_s"] >= 5 for e in renewed)
    # The token the plugin was given (and renewed), in any form, is in none of its output.
    assert len(token) > 20
    out = pl.stderr_text() + pl.stdout_text()
    for form in (token, token.split(".", 1)[-1]):
        assert form not in out, "the token file's token appears in the plugin's output"


def test_without_renewal_the_same_token_expires(plugin_factory, bao):
    bao.write_token_file(short_token(bao))
    pl = plugin_factory.start({"vault": {"auth": {"renew": False}}})
    wait_ok(pl)
    seed = os.urandom(32)
    assert pl.decrypt(pl.encrypt(seed).ciphertext).plaintext == seed
    time.sleep(8)
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
    assert not renew_events(pl)
