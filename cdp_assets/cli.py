"""`cdp`: the project's command line.

cdp run        the sandbox, the Dagster UI and a first run, until Ctrl-C (`make run`)
cdp env        the environment of `cdp run` as export lines, for a shell: eval "$(.venv/bin/cdp env)" (`make shell`)
cdp launch     queue a run of assets or a job on the running Dagster (`cdp launch --assets 'group:staging'`)
cdp pipeline   one headless run of every asset against a freshly started sandbox (`make pipeline`)
cdp eval       a headless run, then identity resolution scored against the world's ground truth (`make eval`)
cdp profile    a few profiles to try, explain one, or keep two identifiers apart (`cdp profile sample`)
cdp identity   retrain the probabilistic matching model on a warehouse (`cdp identity train`)
cdp sync       what each sync would send now, or how its last runs went (`cdp sync plan`, `cdp sync status`)
cdp privacy    file a deletion or access request, process the inbox now, or follow requests
cdp bench      the pipeline's stages timed on a world of N people, and the targets judged (`make bench SIZE=N`)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import shutil
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from dagster import DagsterInstance, RunConfig, materialize

from cdp_assets import launch, stack
from cdp_assets.bench.harness import SERVED_STAGES
from cdp_assets.identity import cli as identity_cli
from cdp_assets.privacy import cli as privacy_cli
from cdp_assets.sync import cli as sync_cli
from resources import PRIVACY_KEY, PROJECT_ROOT, SettingsMissing
from sandbox.config import TOKEN_ENV

DATA = PROJECT_ROOT / "data"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cdp", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="sandbox + Dagster UI + a first run, until Ctrl-C")
    run.add_argument("--people", type=int, default=5000, help="size of the sandbox world, if it must be built")
    run.add_argument("--tick-seconds", type=float, default=60, help="how often the sandbox world changes")
    add_stack_options(run)
    env = commands.add_parser("env", help="`cdp run`'s environment as export lines: eval \"$(.venv/bin/cdp env)\"")
    add_stack_options(env)
    launch.add_parser(commands)

    pipeline = commands.add_parser("pipeline", help="one headless run of every asset")
    pipeline.add_argument("--people", type=int, default=5000, help="size of the sandbox world, if it must be built")
    pipeline.add_argument("--data", type=Path, default=DATA / "pipeline", help="folder for world and warehouse")
    pipeline.add_argument("--sandbox-url", help="use this running sandbox instead of starting one")
    pipeline.add_argument("--full", action="store_true", help="full re-pull of every source, staging replayed")
    pipeline.set_defaults(held_out=False)

    evaluate = commands.add_parser("eval", help="a headless run, then identity resolution scored against truth")
    evaluate.add_argument("--people", type=int, default=5000, help="size of the sandbox world, if it must be built")
    evaluate.add_argument("--data", type=Path,
                          help="folder for world and warehouse (default data/eval/N, or data/held-out/N)")
    evaluate.add_argument("--markdown", type=Path, help="also write the table into this file, in this size's section")
    evaluate.add_argument("--held-out", action="store_true",
                          help="the world the model and its thresholds are chosen on (another seed, other hardness); "
                               "train on its warehouse with `cdp identity train`")
    evaluate.set_defaults(sandbox_url=None, full=False)

    bench = commands.add_parser("bench", help="the pipeline's stages timed on a world of N people")
    bench.add_argument("--people", type=int, required=True, help="size of the sandbox world")
    bench.add_argument("--data", type=Path, help="folder for world and warehouse (default data/bench/N)")
    bench.add_argument("--markdown", type=Path, help="write the figures into this file, in this size's section")
    bench.add_argument("--sandbox-config", type=Path, help="sandbox settings (JSON) instead of the documented ones")
    bench.add_argument("--profile", action="store_true", help="run each stage under pyinstrument (data/profiles/)")
    bench.add_argument("--limit-scale", type=int, default=1,
                       help="serve and pace every rate limit at this many times the documented one")
    bench.add_argument("--until", choices=SERVED_STAGES, default=SERVED_STAGES[-1],
                       help="stop after this stage (the ones before it run too)")
    bench.add_argument("--from", dest="start", choices=SERVED_STAGES,
                       help="resume a stopped run from this stage, on the world and warehouse it left in --data")

    identity_cli.add_parsers(commands, DATA / "warehouse.duckdb")
    sync_cli.add_parsers(commands, DATA / "warehouse.duckdb")
    privacy_cli.add_parsers(commands, DATA / "warehouse.duckdb")

    args = parser.parse_args(argv)
    try:
        dispatch(args)
    except SettingsMissing as exc:  # a command that loads the definitions, outside the launchers' environment
        raise SystemExit(f"cdp {args.command}: {exc}") from None


def dispatch(args: argparse.Namespace) -> None:
    if args.command == "run":
        run_stack(args)
    elif args.command == "env":
        print(shell_exports(args))
    elif args.command == "launch":
        launch.run(args)
    elif args.command == "eval":
        run_eval(args)
    elif args.command in ("profile", "identity"):
        identity_cli.run(args)
    elif args.command == "sync":
        sync_cli.run(args)
    elif args.command == "privacy":
        privacy_cli.run(args)
    elif args.command == "bench":
        run_bench(args)
    else:
        run_pipeline(args)


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    """Options `cdp run` and `cdp env` share, so a shell's environment matches the stack it talks to."""
    parser.add_argument("--host", default="127.0.0.1", help="where the Dagster UI listens")
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--sandbox-port", type=int, default=8765)
    parser.add_argument("--data", type=Path, default=DATA, help="folder for the world, warehouse and run history")


def shell_exports(args: argparse.Namespace) -> str:
    """`export` lines for the stack's environment, with this virtualenv's commands first on PATH. A credential
    already set in the environment is kept by the stack and left out here, so a real secret is never printed; the
    privacy key and the sandbox's token (and the webhook URL holding it) are read from their files when the lines
    are run, so they are not printed either."""
    environment = stack.stack_environment(args.data, args.host, args.ui_port, args.sandbox_port)
    kept = sorted(name for name in [*stack.sandbox_credentials(), PRIVACY_KEY] if name in os.environ)
    words = stack.shell_words(args.data, environment)
    bin_dir = Path(sys.executable).parent  # the virtualenv's bin, holding cdp, dg and dagster
    lines = [f"# the environment of `cdp run --data {args.data} --host {args.host} --ui-port {args.ui_port} "
             f"--sandbox-port {args.sandbox_port}`; use: eval \"$(.venv/bin/cdp env)\""]  # fmt: skip
    if sys.prefix != sys.base_prefix:
        lines.append(f"export VIRTUAL_ENV={shlex.quote(sys.prefix)}")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != str(bin_dir):
        lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    lines += [f"export {name}={words.get(name) or shlex.quote(value)}"
              for name, value in environment.items() if name not in kept]  # fmt: skip
    lines += [f"# {name} is already set in your environment and stays as it is" for name in kept]
    return "\n".join(lines)


def _ensure_world(folder: Path, people: int, held_out: bool = False) -> Path:
    """The sandbox world in `folder`, built first if missing; an interrupted build starts over. The held-out world
    differs from the default one in seed and in hardness settings: no model chosen on it has seen a scored world."""
    from sandbox.store import WorldStore
    from sandbox.world import build_world

    if (folder / "world.db").exists() and WorldStore(folder).get_meta("seed") is not None:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    print(f"building a{' held-out' if held_out else ''} sandbox world of {people:,} people in {folder} ...", flush=True)
    if held_out:
        from cdp_assets.identity.evaluation import HELD_OUT_SEED
        from sandbox.hardness import Hardness

        build_world(folder, people=people, seed=HELD_OUT_SEED, hardness=Hardness.held_out())
    else:
        build_world(folder, people=people)
    return folder


def run_stack(args: argparse.Namespace) -> None:
    from sandbox.runner import SandboxServer

    # Stop as cleanly on SIGTERM as on Ctrl-C, and on Ctrl-C even when started with SIGINT ignored (as a shell
    # starts its background jobs).
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)

    check_ports(args)
    world = _ensure_world(args.data / "sandbox", args.people)
    env = {**os.environ, **stack.stack_environment(args.data, args.host, args.ui_port, args.sandbox_port)}
    ui_url = env["CDP_UI_URL"]
    sandbox_config = {"tick_seconds": args.tick_seconds}
    with SandboxServer(world, sandbox_config, host=stack.SANDBOX_HOST, port=args.sandbox_port,
                       token=env[TOKEN_ENV]) as sandbox:  # fmt: skip
        dagster = stack.start_dg_dev(args.host, args.ui_port, env)
        try:
            location, repository = stack.wait_for_code_location(ui_url, process=dagster)
            # The first run builds everything, the nightly path's assets too; the schedules take over from there.
            os.environ.update(env)  # the definitions and instance the schedule's request reads, as the stack's
            run_config, tags = launch.scheduled_run("nightly_pipeline")  # as its schedule asks for it: every day
            run_id = stack.launch_job(ui_url, location, repository, "nightly_pipeline", run_config=run_config,
                                      tags=tags)
            print(f"\nDagster UI: {ui_url}   first run: {ui_url}/runs/{run_id}", flush=True)
            print(f"Sandbox APIs: {sandbox.url}   Ctrl-C stops everything.", flush=True)
            print("In another terminal, `make shell` (or eval \"$(.venv/bin/cdp env)\") gives cdp, dg and this "
                  "stack's environment.\n", flush=True)  # fmt: skip
            dagster.wait()
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"cdp run: {exc}") from None
        finally:
            stack.stop(dagster)


def check_ports(args: argparse.Namespace) -> None:
    """Stop at once, before building or starting anything, when a port the stack needs is taken."""
    if args.ui_port == args.sandbox_port:
        raise SystemExit(f"cdp run: --ui-port and --sandbox-port are both {args.ui_port}; choose two ports")
    ports = [("the Dagster UI", "--ui-port", args.host, args.ui_port),
             ("the sandbox", "--sandbox-port", stack.SANDBOX_HOST, args.sandbox_port)]  # fmt: skip
    for what, flag, host, port in ports:
        problem = stack.cannot_listen(host, port)
        if problem is not None and problem.errno == errno.EADDRINUSE:
            raise SystemExit(f"cdp run: port {port} is in use, so {what} cannot listen on it; "
                             f"choose another with {flag} N")  # fmt: skip
        if problem is not None:
            raise SystemExit(f"cdp run: {what} cannot listen on {host}:{port} ({problem.strerror or problem})")


def run_pipeline(args: argparse.Namespace) -> None:
    from sandbox.runner import SandboxServer

    args.data.mkdir(parents=True, exist_ok=True)
    os.environ.update(stack.launcher_environment(args.data))
    os.environ["CDP_WAREHOUSE"] = str((args.data / "warehouse.duckdb").resolve())
    if args.sandbox_url:
        summarise(materialize_all(args.sandbox_url, args.full))
        return
    world = _ensure_world(args.data / "sandbox", args.people, args.held_out)
    with SandboxServer(world) as sandbox:
        summarise(materialize_all(sandbox.url, args.full))


def run_eval(args: argparse.Namespace) -> None:
    """The pipeline's run, then its profiles scored against the truth of the world it pulled, beside whether the
    model was trained on a world apart from it. Each world size and kind has its own folder, so a figure of one
    size is never scored on a world built for another."""
    from cdp_assets.identity import misses
    from cdp_assets.identity.evaluation import (
        HELD_OUT_SEED,
        World,
        held_out,
        score,
        text_table,
        write_markdown,
    )
    from cdp_assets.identity.matching import MODEL_PATH
    from cdp_assets.identity.rules import load as load_rules
    from sandbox.store import WorldStore

    if args.held_out and args.markdown:
        raise SystemExit("cdp eval: the held-out world is where the model is chosen; its figures go into no docs")
    args.data = args.data or DATA / ("held-out" if args.held_out else "eval") / str(args.people)
    world = args.data / "sandbox"
    if (world / "world.db").exists() and WorldStore(world).get_meta("seed") is not None:  # else built afresh
        found = World.read(world)
        if found.people != args.people or (found.seed == HELD_OUT_SEED) != args.held_out:
            kind = "the held-out world" if args.held_out else "a scored world"
            raise SystemExit(f"cdp eval: {world} holds a world of {found.describe()}; "
                             f"give another --data for {kind} of {args.people:,} people")
    run_pipeline(args)
    with duckdb.connect(os.environ["CDP_WAREHOUSE"], read_only=True) as conn:
        evaluation = score(conn, world)
        missed = misses.explain(conn, load_rules())
    provenance = held_out(MODEL_PATH, evaluation.world)
    print(f"\n{text_table(evaluation, provenance)}\n\n{misses.text(missed)}")
    if args.held_out:
        print(f"\nchoose the thresholds on this world; train on it: cdp identity train --warehouse {args.data}"
              "/warehouse.duckdb")
    if args.markdown:
        command = f"cdp eval --people {args.people} --markdown {args.markdown}"
        write_markdown(args.markdown, evaluation, command, provenance, misses.markdown(missed))
        print(f"\nwritten to {args.markdown}")


def run_bench(args: argparse.Namespace) -> None:
    """The stages at one size; with --markdown, the figures go into that file and, as JSON, beside it
    (benchmarks/N.json), where a larger size finds them to judge how memory grows. Both are rewritten after
    every stage, so a run stopped part way keeps what it measured and says which stages it did not reach."""
    from cdp_assets.bench import harness, report

    config = json.loads(args.sandbox_config.read_text()) if args.sandbox_config else {}
    figures = args.markdown.with_suffix("") / f"{args.people}.json" if args.markdown else None
    sizes = sorted(int(p.stem) for p in figures.parent.glob("*.json")) if figures and figures.parent.exists() else []
    smaller = next((report.load(figures.parent / f"{n}.json") for n in reversed(sizes) if n < args.people), None)

    def publish(results: dict[str, object]) -> None:
        results.update(machine=report.machine(), measured_at=datetime.now(UTC).strftime("%Y-%m-%d"))
        if args.markdown and figures:
            figures.parent.mkdir(parents=True, exist_ok=True)
            figures.write_text(json.dumps(results, indent=1) + "\n")
            report.write(args.markdown, results, smaller)

    data = args.data or DATA / "bench" / str(args.people)
    results = harness.run(args.people, data, config, args.profile, args.limit_scale, args.until, publish,
                          start=args.start)
    print(f"\n{report.markdown(results, smaller)}")
    if args.markdown:
        print(f"\nwritten to {args.markdown} and {figures}")


def materialize_all(sandbox_url: str, full: bool) -> dict[str, dict[str, object]]:
    """Materialise every asset in this process; returns each asset's materialisation metadata."""
    os.environ["CDP_SANDBOX_URL"] = sandbox_url
    from cdp_assets.definitions import defs, refresh_ops
    from resources import build_resources

    run_config = RunConfig(
        ops=refresh_ops(full),
        loggers={"console": {"config": {"log_level": "INFO"}}},
    )
    result = materialize(
        list(defs.assets or []),
        resources=build_resources(),
        instance=DagsterInstance.ephemeral(),
        run_config=run_config,
    )
    if not result.success:
        raise SystemExit("the pipeline run failed")
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def summarise(metadata: dict[str, dict[str, object]]) -> None:
    print(f"\n{'raw asset':36} {'fetched':>9} {'new':>9} {'requests':>9} {'retries':>8} {'seconds':>8}")
    for key, meta in sorted(metadata.items()):
        if key.startswith("raw/"):
            print(
                f"{key:36} {meta['rows_fetched']:>9,} {meta['rows_new']:>9,} {meta['requests']:>9,}"
                f" {meta['retries']:>8,} {meta['seconds']:>8}"
            )
    print(f"\n{'staging asset':36} {'rows in':>9} {'passed':>9} {'quarantined':>12} {'deleted':>9}")
    for key, meta in sorted(metadata.items()):
        if key.startswith("staging/"):
            print(
                f"{key:36} {meta['rows_in']:>9,} {meta['rows_passed']:>9,} {meta['rows_quarantined']:>12,}"
                f" {meta['rows_deleted_at_source']:>9,}"
            )
    print(f"\nwarehouse: {os.environ['CDP_WAREHOUSE']}")


if __name__ == "__main__":
    main()
