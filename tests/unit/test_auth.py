"""Auth policy: pure decisions, no sockets."""

from __future__ import annotations

from sandtrap.auth import AuthPolicy
from sandtrap.config import AuthConfig, Credential


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock | None = None, **overrides: object) -> AuthPolicy:
    data: dict[str, object] = {
        "credentials": [Credential(username="root", password="123456")],
        "accept_after_failures": 0,
    }
    data.update(overrides)
    return AuthPolicy(AuthConfig.model_validate(data), clock=clock or FakeClock())


def test_exact_pair_accepted_other_refused() -> None:
    policy = make()
    conn = policy.connection("1.2.3.4")
    assert policy.check_password(conn, "root", "123456").reason == "credentials"
    decision = policy.check_password(conn, "root", "wrong")
    assert not decision.accepted
    assert decision.reason == "invalid credentials"
    assert not policy.check_password(conn, "admin", "123456").accepted


def test_wildcard_accepts_any_password_of_that_user_only() -> None:
    policy = make(credentials=[Credential(username="oracle", password="*")])
    conn = policy.connection("1.2.3.4")
    decision = policy.check_password(conn, "oracle", "anything at all")
    assert decision.accepted
    assert decision.reason == "wildcard"
    assert not policy.check_password(conn, "root", "anything at all").accepted


def test_deny_is_checked_first() -> None:
    policy = make(
        credentials=[Credential(username="root", password="*")],
        deny=[Credential(username="root", password="root")],
        accept_after_failures=1,
    )
    conn = policy.connection("1.2.3.4")
    policy.check_password(conn, "root", "x")  # accepted by wildcard, no failure
    for _ in range(3):
        decision = policy.check_password(conn, "root", "root")
        assert not decision.accepted
        assert decision.reason == "denied"
    assert policy.check_password(conn, "root", "other").accepted


def test_accept_after_failures_per_ip_across_connections() -> None:
    policy = make(accept_after_failures=2)
    first = policy.connection("1.2.3.4")
    assert not policy.check_password(first, "root", "a").accepted
    second = policy.connection("1.2.3.4")
    assert not policy.check_password(second, "root", "b").accepted
    third = policy.connection("1.2.3.4")
    decision = policy.check_password(third, "root", "c")
    assert decision.accepted
    assert decision.reason == "accept_after_failures"
    # Another IP has its own count.
    other = policy.connection("5.6.7.8")
    assert not policy.check_password(other, "root", "c").accepted


def test_accept_after_failures_per_connection() -> None:
    policy = make(accept_after_failures=2, failure_scope="connection", remember_accepted=False)
    first = policy.connection("1.2.3.4")
    assert not policy.check_password(first, "root", "a").accepted
    second = policy.connection("1.2.3.4")
    assert not policy.check_password(second, "root", "b").accepted
    assert not policy.check_password(second, "root", "c").accepted
    assert policy.check_password(second, "root", "d").accepted


def test_remembered_password_stays_accepted_and_others_need_new_failures() -> None:
    policy = make(accept_after_failures=1)
    conn = policy.connection("1.2.3.4")
    assert not policy.check_password(conn, "root", "a").accepted
    assert policy.check_password(conn, "root", "b").reason == "accept_after_failures"
    later = policy.connection("1.2.3.4")
    assert policy.check_password(later, "root", "b").reason == "remembered"
    assert not policy.check_password(later, "root", "c").accepted
    assert policy.check_password(later, "root", "d").accepted


def test_without_remember_the_password_is_forgotten() -> None:
    policy = make(accept_after_failures=1, remember_accepted=False)
    conn = policy.connection("1.2.3.4")
    policy.check_password(conn, "root", "a")
    assert policy.check_password(conn, "root", "b").accepted
    assert not policy.check_password(conn, "root", "b").accepted


def test_memory_expires_after_ttl() -> None:
    clock = FakeClock()
    policy = make(clock, accept_after_failures=1, memory_ttl_seconds=60)
    conn = policy.connection("1.2.3.4")
    policy.check_password(conn, "root", "a")
    assert policy.check_password(conn, "root", "b").accepted
    clock.now += 61
    assert policy.remembered_ips() == 0
    later = policy.connection("1.2.3.4")
    assert not policy.check_password(later, "root", "b").accepted


def test_memory_is_bounded_least_recent_first() -> None:
    policy = make(accept_after_failures=1, memory_max_ips=2)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        policy.check_password(policy.connection(ip), "root", "x")
    assert policy.remembered_ips() == 2
    # 10.0.0.1 was forgotten: its failure no longer counts.
    assert not policy.check_password(policy.connection("10.0.0.1"), "root", "y").accepted
    assert policy.check_password(policy.connection("10.0.0.3"), "root", "y").accepted


FP_A = "SHA256:" + "A" * 43
FP_B = "SHA256:" + "B" * 43
FP_C = "SHA256:" + "C" * 43


def test_public_keys_refused_by_default_and_not_counted() -> None:
    policy = make(accept_after_failures=1)
    conn = policy.connection("1.2.3.4")
    decision = policy.check_public_key(conn, "root", FP_A)
    assert not decision.accepted
    assert decision.reason == "public key refused"
    assert not policy.check_password(conn, "root", "x").accepted


def test_public_keys_accepted_when_configured() -> None:
    policy = make(accept_public_keys=True)
    decision = policy.check_public_key(policy.connection("1.2.3.4"), "root", FP_A)
    assert (decision.accepted, decision.reason) == (True, "public keys accepted")


def test_listed_fingerprint_accepted_others_refused() -> None:
    policy = make(accepted_key_fingerprints=[FP_B])
    conn = policy.connection("1.2.3.4")
    assert not policy.check_public_key(conn, "root", FP_A).accepted
    decision = policy.check_public_key(conn, "root", FP_B)
    assert (decision.accepted, decision.reason) == (True, "listed key")


def test_nth_distinct_key_accepted_and_the_query_repeat_counts_once() -> None:
    policy = make(accept_keys_after_offers=3, remember_accepted=False)
    conn = policy.connection("1.2.3.4")
    assert not policy.check_public_key(conn, "root", FP_A).accepted
    # The same key asked again (asyncssh asks at the query and the signed request): same answer.
    assert not policy.check_public_key(conn, "root", FP_A).accepted
    assert not policy.check_public_key(conn, "root", FP_B).accepted
    third = policy.check_public_key(conn, "root", FP_C)
    assert (third.accepted, third.reason) == (True, "accept_keys_after_offers")
    assert policy.check_public_key(conn, "root", FP_C).accepted
    # The count starts again: a new connection's first key is refused.
    assert not policy.check_public_key(policy.connection("1.2.3.4"), "root", FP_A).accepted


def test_key_offers_counted_per_ip_across_connections_and_remembered() -> None:
    policy = make(accept_keys_after_offers=2)
    assert not policy.check_public_key(policy.connection("1.2.3.4"), "root", FP_A).accepted
    assert not policy.check_public_key(policy.connection("5.6.7.8"), "root", FP_B).accepted
    second = policy.check_public_key(policy.connection("1.2.3.4"), "root", FP_B)
    assert second.accepted
    again = policy.check_public_key(policy.connection("1.2.3.4"), "root", FP_B)
    assert (again.accepted, again.reason) == (True, "remembered")
    assert not policy.check_public_key(policy.connection("1.2.3.4"), "admin", FP_B).accepted


def test_key_offers_per_connection_scope() -> None:
    policy = make(accept_keys_after_offers=2, failure_scope="connection")
    assert not policy.check_public_key(policy.connection("1.2.3.4"), "root", FP_A).accepted
    conn = policy.connection("1.2.3.4")
    assert not policy.check_public_key(conn, "root", FP_A).accepted
    assert policy.check_public_key(conn, "root", FP_B).accepted
