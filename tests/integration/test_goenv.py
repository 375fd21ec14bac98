"""itlib/goenv.py: the one Go build configuration every go build/go test of the integration
tests shares (a changed flag set recompiles every Go package once, so it must be stable)."""
from itlib import goenv


def test_adds_both_flags_to_what_go_env_has():
    env = {"GOFLAGS": "-mod=mod"}
    goenv.configure(env)
    assert env["GOFLAGS"].split() == ["-mod=mod", "-buildvcs=false", "-gcflags=all=-dwarf=false"]


def test_an_empty_goflags_gets_both():
    env = {"GOFLAGS": ""}
    goenv.configure(env)
    assert env["GOFLAGS"] == "-buildvcs=false -gcflags=all=-dwarf=false"


def test_a_callers_own_choice_is_kept():
    env = {"GOFLAGS": "-buildvcs=true -gcflags=all=-N"}
    goenv.configure(env)
    assert env["GOFLAGS"] == "-buildvcs=true -gcflags=all=-N"


def test_is_idempotent():
    env = {"GOFLAGS": ""}
    goenv.configure(env)
    once = env["GOFLAGS"]
    goenv.configure(env)
    assert env["GOFLAGS"] == once


def test_unset_goflags_reads_go_env(monkeypatch, tmp_path):
    # A fake `go` on PATH that answers `go env GOFLAGS` proves where the base value comes from.
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\n[ \"$1 $2\" = 'env GOFLAGS' ] && echo '-trimpath'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}")
    env = {}
    goenv.configure(env)
    assert env["GOFLAGS"] == "-trimpath -buildvcs=false -gcflags=all=-dwarf=false"
