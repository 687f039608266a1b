"""Token format: self-describing, parseable, hashed whole, compared in constant time."""

from __future__ import annotations

import hashlib
import re

from sluicegate.keys import tokens


def test_format_carries_attribution_key_id_and_a_160_bit_secret() -> None:
    token = tokens.make_token("abcdefgh2345", "alice", "payments", "dev")
    assert re.fullmatch(r"sgk_alice_payments_dev_abcdefgh2345_[a-z2-7]{32}", token)
    p = tokens.parse_token(token)
    assert p is not None
    assert (p.user, p.project, p.env, p.key_id) == ("alice", "payments", "dev", "abcdefgh2345")
    assert len(p.secret) * 5 >= 128


def test_secrets_differ_and_key_ids_are_well_formed() -> None:
    kid = tokens.new_key_id()
    assert re.fullmatch(r"[a-z2-7]{12}", kid)
    a, b = tokens.make_token(kid, "u", None, None), tokens.make_token(kid, "u", None, None)
    assert a != b


def test_fields_with_separators_and_unicode_round_trip() -> None:
    token = tokens.make_token("abcdefgh2345", "alice_smith@example.com", "team ü/x", None)
    assert token.count("_") == 5
    assert re.fullmatch(r"[A-Za-z0-9._~+-]+", token)  # RFC 6750 bearer characters only
    p = tokens.parse_token(token)
    assert p is not None
    assert (p.user, p.project, p.env) == ("alice_smith@example.com", "team ü/x", None)


def test_malformed_tokens_do_not_parse() -> None:
    good = tokens.make_token("abcdefgh2345", "a", "b", "c")
    for bad in [
        "",
        "sk-ant-api03-xyz",
        good.replace("sgk_", "sgx_"),
        good + "x",
        good[:-1],
        good.replace("_a_", "_a b_"),
        "sgk_a~zz_b_c_abcdefgh2345_" + "a" * 32,
        "sgk_a_b_c_d_abcdefgh2345_" + "a" * 32,
    ]:
        assert tokens.parse_token(bad) is None, bad
    assert tokens.key_id_of("sk-ant-api03-xyz") is None
    assert tokens.key_id_of(good) == "abcdefgh2345"


def test_hash_is_sha256_of_the_whole_token_and_verify_rejects_edits() -> None:
    token = tokens.make_token("abcdefgh2345", "alice", "payments", "dev")
    digest = tokens.hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert tokens.verify(token, digest)
    assert not tokens.verify(token.replace("alice", "bob"), digest)
    assert not tokens.verify(token[:-1] + ("a" if token[-1] != "a" else "b"), digest)


def test_redact_keeps_everything_but_the_secret() -> None:
    token = tokens.make_token("abcdefgh2345", "alice", "payments", "dev")
    red = tokens.redact(token)
    assert red.startswith("sgk_alice_payments_dev_abcdefgh2345_")
    assert tokens.parse_token(token).secret not in red  # type: ignore[union-attr]
