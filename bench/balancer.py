"""A rolling restart behind a real balancer: what clients lose, plain Django against
django_graceful, behind nginx and HAProxy, on every server kind, over TCP and Unix sockets.

Each case is tests/balancers.py's rolling restart (the recipes of deploy/, filled in with
this run's addresses): two servers of one kind (one process each) behind the balancer;
``--gets`` clients send ``GET /slow/?s=0.05`` (8 KiB) each on a fresh connection and
``--posts`` clients a 16 KiB ``POST`` each on one kept-alive connection to the balancer,
back to back; the first server gets SIGTERM, is started again once it exited (within its
budget + 2 s, else killed: Kubernetes' terminationGracePeriodSeconds), and once the
balancer sends it requests again the second one is restarted the same way. A request is
ok (a 200 with the whole body) or lost: any other status (the balancer's 502, a 503 passed
on) or a connection error. HAProxy checks ``/health/ready/`` every 0.2 s, 2 failures take
a server out; nginx has no active check.

plain Django is the test project without ``GracefulASGI`` (its ``/health/ready/`` answers
200 until the process is gone); django_graceful has ``DRAIN_DELAY`` ``--drain`` (covering
HAProxy's check), ``GRACE_PERIOD`` 2, ``CANCEL_TIMEOUT`` 1, ``HOOK_TIMEOUT`` 0.5.

Run: ``.venvs/py313/bin/python bench/balancer.py [--servers uvicorn daphne]
[--balancers nginx haproxy] [--transports tcp unix] [--variants plain graceful]
[--gets 8] [--posts 8] [--drain 1] [--repeat 1]``
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path: the repository instead (a
# file of bench/ would shadow a package: bench/websockets.py the ``websockets`` package).
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench.harness import SERVER_NAMES, arguments, begin, log, publish, versions  # noqa: E402
from django_graceful._cli.servers import KINDS  # noqa: E402
from tests.balancers import (  # noqa: E402
    POST_BODY,
    SIZE,
    TRANSPORTS,
    Outcome,
    RollingRestart,
    missing,
    program,
)
from tests.servers import SERVERS  # noqa: E402

PHASES = {"GRACE_PERIOD": 2, "CANCEL_TIMEOUT": 1, "HOOK_TIMEOUT": 0.5}
VARIANTS = {"plain": "plain Django", "graceful": "django_graceful"}
#: The balancers: the recipes, and nginx with ``non_idempotent`` added (what the recipe
#: says to add over TCP: a POST it has sent once is sent to another server too).
FRONTS = {"nginx": "nginx", "nginx-post-retry": "nginx", "haproxy": "haproxy"}


@dataclass
class Case:
    server: str
    balancer: str
    transport: str
    variant: str
    outcomes: list[Outcome]
    exits: list[float]  # seconds from SIGTERM to exit, each restart
    error: str | None = None  # the run itself failed (a server did not start, exit in time)

    def lost(self, method: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.method == method and not o.ok]

    def ok(self) -> int:
        return sum(o.ok for o in self.outcomes)


#: Plain Django runs on ASGI only: no plain row for Granian's RSGI interface.
NO_PLAIN = {name for name, kind in KINDS.items() if kind.interface == "rsgi"}


def run_case(
    server: str, balancer: str, transport: str, variant: str, gets: int, posts: int, drain: float
) -> Case:
    graceful = None
    if variant == "graceful":
        graceful = {
            "DRAIN_DELAY": drain,
            "GRACE_PERIOD": 2,
            "CANCEL_TIMEOUT": 1,
            "HOOK_TIMEOUT": 0.5,
        }
    retry_posts = balancer == "nginx-post-retry"
    roll = RollingRestart(FRONTS[balancer], server, transport, graceful, retry_posts=retry_posts)
    try:
        with roll:
            clients = roll.roll(gets, posts)
    except AssertionError as exc:
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        return Case(server, balancer, transport, variant, [], [], error=first[:200])
    exits = [r.exit_after for r in roll.restarts]
    return Case(server, balancer, transport, variant, clients.outcomes, exits)


def reasons(lost: list[Outcome]) -> str:
    if not lost:
        return "0"
    counts = Counter(o.reason.split(":")[0] for o in lost)
    return f"**{len(lost)}** (" + ", ".join(f"{n}x {r}" for r, n in counts.most_common()) + ")"


def row(case: Case) -> str:
    cells = [SERVER_NAMES[case.server], case.balancer, case.transport, VARIANTS[case.variant]]
    if case.error is not None:
        return "| " + " | ".join([*cells, "-", f"run failed: {case.error}", "", ""]) + " |"
    exits = ", ".join(f"{e:.1f}" for e in case.exits)
    cells += [str(case.ok()), reasons(case.lost("GET")), reasons(case.lost("POST")), exits]
    return "| " + " | ".join(cells) + " |"


def table(cases: list[Case]) -> str:
    head = ["server", "balancer", "to the servers", "app", "ok", "GETs lost", "POSTs lost"]
    head.append("exits after SIGTERM (s)")
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|" + "---:|" * 3 + "---|"]
    return "\n".join(lines + [row(case) for case in cases])


def balancer_versions(balancers: list[str]) -> str:
    found = []
    for balancer in dict.fromkeys(FRONTS[b] for b in balancers):
        exe = program(balancer)
        if exe is None:
            continue
        flag = "-v"
        done = subprocess.run([exe, flag], capture_output=True, text=True, check=False)
        first = (done.stdout or done.stderr).strip().splitlines()
        found.append(first[0] if first else balancer)
    return "; ".join(found)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__, variants=VARIANTS)
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--balancers", nargs="+", choices=FRONTS, default=list(FRONTS))
    parser.add_argument("--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    parser.add_argument("--gets", type=int, default=8, help="clients on fresh connections")
    parser.add_argument("--posts", type=int, default=8, help="clients on kept-alive ones")
    parser.add_argument("--drain", type=float, default=1.0, help="DRAIN_DELAY, s")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case")
    args = parser.parse_args(argv)
    balancers = []
    for balancer in args.balancers:
        if reason := missing(FRONTS[balancer]):
            log(f"{balancer}: skipped: {reason}")
        else:
            balancers.append(balancer)
    began = begin()
    cases: list[Case] = []
    for balancer in balancers:
        for transport in args.transports:
            for server in args.servers:
                for variant in [v for v in VARIANTS if v in args.variants]:
                    if variant == "plain" and server in NO_PLAIN:
                        continue
                    for _ in range(args.repeat):
                        case = run_case(
                            server, balancer, transport, variant, args.gets, args.posts, args.drain
                        )
                        cases.append(case)
                        log(row(case))
    text = "\n".join(
        [
            f"A rolling restart behind a balancer ({versions('django', servers=args.servers)}; "
            f"{balancer_versions(balancers)}).",
            f"{args.gets} clients GET (fresh connections, {SIZE // 1024} KiB answers) and "
            f"{args.posts} POST {len(POST_BODY) // 1024} KiB (kept-alive connections to the "
            f"balancer), back to back; two servers, one process each, restarted one after "
            f"the other. django_graceful: DRAIN_DELAY {args.drain:g}, GRACE_PERIOD 2, "
            f"CANCEL_TIMEOUT 1. Lost: any answer but a whole 200 (the balancer's 502, a 503), "
            "or a connection error. Plain Django runs on ASGI only (no Granian RSGI row).",
            "",
            table(cases),
        ]
    )
    slug = "balancer" + ("" if args.servers == list(SERVERS) else "-" + "+".join(args.servers))
    publish(f"{slug}.md", text, began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
