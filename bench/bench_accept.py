"""Accept throughput: the durable PUT buildEvent path versus a bare Flask "return 200" app, same gunicorn settings.

    .venv/bin/python bench/bench_accept.py [--seconds 15] [--connections 16] [--rounds 3]
    .venv/bin/python bench/bench_accept.py --against ../wt-before [--rounds 4] [--no-postgres] [--lean]

Runs, one after the other on the same machine: the bare app; ``pipeline-bridge serve`` on SQLite (web workers and
the delivery worker writing to the file sink); and ``serve`` on PostgreSQL with 2 web processes. Each is loaded
with the same closed-loop generator for the same time, in ``--rounds`` rounds; the best run of each is compared.
Target (issue 17): SQLite durable >= 0.3 x the bare ceiling.

``--against DIR`` (a ``git worktree add`` of another commit) adds, in every round right after this tree's SQLite
run, the same run of the bridge imported from DIR (``PYTHONPATH``, same virtualenv): an A/B pair per round, so the
machine's drift hits both versions alike; the PostgreSQL runs are paired the same way. ``--no-postgres`` leaves
them out. ``--lean`` adds, in every round, the ``lean`` baseline of ``baselines.py``: the same durable job with no
framework beyond Flask, the floor the bridge is compared with (the bridge's figure includes its delivery worker;
the lean server has none); with the PostgreSQL runs, the same job on PostgreSQL through psycopg alone, 2 web
processes, after them in each round.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import (
    Throughput,
    baseline,
    bridge,
    header,
    postgres_schema,
    sqlite_url,
    table,
    throughput,
    verdict,
    workdir,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each server, one after the other; best shown")
    parser.add_argument("--against", help="a worktree of another commit, run after this tree's SQLite in each round")
    parser.add_argument("--no-postgres", action="store_true", help="leave out the PostgreSQL runs")
    parser.add_argument("--lean", action="store_true", help="add the lean durable baseline to every round")
    args = parser.parse_args()
    header("accept throughput: durable PUT buildEvent vs bare Flask, same gunicorn settings (2 workers x 4 threads)")
    directory = workdir("accept")
    for name in ("sqlite", "against", "lean"):
        (directory / name).mkdir()

    # Rounds, because how gunicorn's two workers happen to share wrk's keep-alive connections moves a single
    # run by up to a factor of two (the bare app measured 890 and 2,125 req/s in two runs here); the best of each
    # is the ceiling that server reached.
    runs: dict[str, list[Throughput]] = {
        "bare": [],
        "sqlite": [],
        "against": [],
        "lean": [],
        "postgres": [],
        "postgres-against": [],
        "lean-postgres": [],
    }
    for number in range(args.rounds):
        with baseline(directory, "bare") as server:
            runs["bare"].append(throughput(server.base_url, args.seconds, args.connections, server=server))
        # With --against the order within a pair alternates by round, so neither version always runs first.
        versions: list[tuple[str, dict[str, str]]] = [("sqlite", {})]
        if args.against:
            versions.append(("against", {"PYTHONPATH": str(Path(args.against).resolve())}))
        for name, env in versions[:: -1 if number % 2 else 1]:
            with bridge(directory / name, sqlite_url(directory / f"{name}-{number}"), **env) as server:
                runs[name].append(throughput(server.base_url, args.seconds, args.connections, server=server))
        if args.lean:
            with baseline(directory / "lean", "lean", database_url=sqlite_url(directory / f"lean-{number}")) as server:
                runs["lean"].append(throughput(server.base_url, args.seconds, args.connections, server=server))
        if not args.no_postgres:
            for name, env in versions[:: -1 if number % 2 else 1]:
                key = "postgres" if name == "sqlite" else "postgres-against"
                with (
                    postgres_schema() as database_url,
                    bridge(directory / name, database_url, WEB_CONCURRENCY="2", **env) as server,
                ):
                    result = throughput(server.base_url, args.seconds, args.connections, server=server, database=True)
                    runs[key].append(result)
            if args.lean:
                with (
                    postgres_schema() as database_url,
                    baseline(directory / "lean", "lean", database_url=database_url) as server,
                ):
                    result = throughput(server.base_url, args.seconds, args.connections, server=server, database=True)
                    runs["lean-postgres"].append(result)
    for name, results in runs.items():
        if results:
            figures = ", ".join(
                f"{result.requests_per_second:.0f} ({result.cpu_ms_per_request:.2f} ms)" for result in results
            )
            print(f"# {name}: {figures} req/s (server CPU ms/request)")
    for name in ("postgres", "postgres-against", "lean-postgres"):
        if runs[name]:
            figures = ", ".join(f"{result.database_cpu_ms_per_request:.2f}" for result in runs[name])
            print(f"# {name}: PostgreSQL's own processes, CPU ms/request beside the bridge's: {figures}")
    best = {
        name: max(results, key=lambda result: result.requests_per_second) for name, results in runs.items() if results
    }
    bare, durable = best["bare"], best["sqlite"]

    rows = [("server", "req/s", "server CPU ms/request", "non-2xx", "socket errors", "vs bare")]
    names = {
        "bare": "bare Flask 'return 200'",
        "sqlite": "bridge, SQLite (durable)",
        "against": f"bridge from {args.against}, SQLite (durable)",
        "lean": "lean durable create (baselines.py lean), SQLite",
        "postgres": "bridge, PostgreSQL, 2 web processes",
        "postgres-against": f"bridge from {args.against}, PostgreSQL, 2 web processes",
        "lean-postgres": "lean durable create (baselines.py lean), PostgreSQL, 2 web processes",
    }
    for key, result in best.items():
        name = names[key]
        ratio = result.requests_per_second / bare.requests_per_second
        rows.append(
            (
                name,
                f"{result.requests_per_second:.0f}",
                f"{result.cpu_ms_per_request:.2f}",
                str(result.non_2xx),
                str(result.errors),
                f"{ratio:.2f}",
            )
        )
    print(f"# load: {bare.tool}, {args.connections} connections, {args.seconds:.0f} s each after a 2 s warm-up")
    table(rows)
    ratio = durable.requests_per_second / bare.requests_per_second
    print(f"SQLite durable / bare = {ratio:.2f} (target >= 0.3): {verdict(ratio >= 0.3 and durable.non_2xx == 0)}")
    if runs["postgres"]:
        postgres, sqlite = (
            sum(r.requests_per_second for r in runs[name]) / len(runs[name]) for name in ("postgres", "sqlite")
        )
        print(f"PostgreSQL / SQLite, means = {postgres / sqlite:.2f} (target >= 1): {verdict(postgres >= sqlite)}")
    if runs["lean"]:
        means = {name: sum(r.requests_per_second for r in runs[name]) / len(runs[name]) for name in ("sqlite", "lean")}
        print(
            f"# bridge / lean: best {durable.requests_per_second / best['lean'].requests_per_second:.2f}, "
            f"mean {means['sqlite'] / means['lean']:.2f} (lean mean {means['lean']:.0f} req/s)"
        )
    if runs["lean-postgres"] and runs["postgres"]:
        means = {
            name: sum(r.requests_per_second for r in runs[name]) / len(runs[name])
            for name in ("sqlite", "postgres", "lean-postgres")
        }
        print(
            f"# PostgreSQL: bridge / lean mean {means['postgres'] / means['lean-postgres']:.2f}; "
            f"lean PostgreSQL / bridge SQLite mean {means['lean-postgres'] / means['sqlite']:.2f} "
            f"(lean PostgreSQL mean {means['lean-postgres']:.0f} req/s)"
        )
    if args.against:
        # The pairs' means, beside the best of each: one change's effect is often smaller than the drift.
        for name in ("sqlite", "against", "postgres", "postgres-against"):
            if not runs[name]:
                continue
            rate = sum(result.requests_per_second for result in runs[name]) / len(runs[name])
            cpu = sum(result.cpu_ms_per_request for result in runs[name]) / len(runs[name])
            print(f"# {names[name]}: mean {rate:.0f} req/s, {cpu:.2f} ms of server CPU per request")


if __name__ == "__main__":
    main()
