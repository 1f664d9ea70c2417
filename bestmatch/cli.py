"""``bestmatch <command>``: one entry point for the service, the jobs and dev servers.

Run ``bestmatch --help`` (or ``bestmatch <command> --help``) for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from feature_jobs.refresh import PublishConfig

Config = TypeVar("Config", bound="PublishConfig")


def _settings():
    from app.settings import get_settings

    return get_settings()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    s = _settings()
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run("app.api:create_app", factory=True, host=args.host or s.host,
                port=args.port or s.port, workers=args.workers or s.workers,
                log_level=s.log_level.lower(), access_log=args.access_log)
    return 0


def cmd_devstack(args: argparse.Namespace) -> int:
    import devstack

    if args.action == "down":
        devstack.down()
        return 0
    servers = devstack.up()
    for line in devstack.env_lines(servers):
        print(f"export {line}" if args.action == "up" else line)
    return 0


def _with_engine(job):
    """Run ``job(engine, alias)`` on the configured engine (a batch-job timeout), then close."""
    from app.backends import open_engine

    s = _settings()

    async def run():
        engine = open_engine(s, timeout_s=max(s.engine_timeout_s, 30.0))
        try:
            return await job(engine, s.index_alias)
        finally:
            await engine.close()

    return asyncio.run(run())


def cmd_index(args: argparse.Namespace) -> int:
    from feature_jobs.index_catalog import index_catalog

    rejects = Path(args.rejects) if args.rejects else Path(f"{args.input}.rejects.jsonl")

    async def job(engine, alias):
        with open(args.input, "rb") as lines:
            return await index_catalog(engine, alias, lines, rejects,
                                       keep_previous=args.keep_previous)

    report = _with_engine(job)
    print(json.dumps(asdict(report), ensure_ascii=False, indent=2))
    if report.rejected:
        print(f"{report.rejected} rows rejected, see {rejects}", file=sys.stderr)
    return 0


def cmd_model_baseline(args: argparse.Namespace) -> int:
    from training.baseline_model import write_baseline

    models_dir = Path(args.models_dir or _settings().models_dir)
    path = models_dir / "baseline" / args.version
    if path.exists():
        print(f"{path} exists")
        return 0
    print(write_baseline(models_dir, args.version))
    return 0


def _sim_config(args: argparse.Namespace):
    from training.simulator.run import SimConfig
    from training.simulator.sessions import SessionConfig

    return SimConfig(listings=args.listings, queries=args.queries, seed=args.seed, now=args.now,
                     sessions=SessionConfig(sessions=args.sessions, seed=args.seed,
                                            page_size=args.page_size))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="", leave=False, file=sys.stderr)


def cmd_simulate(args: argparse.Namespace) -> int:
    from training.simulator.run import simulate

    bar = _progress(args.sessions, "sessions")
    summary = simulate(Path(args.out), _sim_config(args), bar.update)
    bar.close()
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


def cmd_simulate_traffic(args: argparse.Namespace) -> int:
    from training.simulator.traffic import TrafficConfig, drive_traffic

    config = TrafficConfig(url=args.url, sim_dir=Path(args.sim_dir), out_dir=Path(args.out),
                           sessions=args.sessions, concurrency=args.concurrency, seed=args.seed,
                           page_size=args.page_size, max_seconds=args.max_seconds,
                           timeout_s=args.timeout_s)
    if not (config.sim_dir / "summary.json").is_file():
        print(f"error: {config.sim_dir}/summary.json not found", file=sys.stderr)
        return 2
    bar = _progress(args.sessions, "sessions")
    summary = drive_traffic(config, bar.update)
    bar.close()
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0 if summary["answered"] else 1


def cmd_train_ltr(args: argparse.Namespace) -> int:
    if args.letor:
        return _train_letor(args)
    from app.scoring import ModelError
    from training.dataset import ServedSpecMismatch
    from training.fit import FitConfig
    from training.train_ltr import LtrConfig, train_ltr, train_served

    config = LtrConfig(
        sim_dir=Path(args.sim_dir), out_dir=Path(args.out), version=args.version,
        models_dir=Path(args.models_dir or _settings().models_dir), sim=_sim_config(args),
        fit=FitConfig(epochs=args.epochs, temperature=args.temperature, seed=args.seed),
        export=args.export, threads=args.threads)
    try:
        if args.served:
            summary = _train_served(args, config, train_served)
        else:
            summary = train_ltr(config, say=_say, progress_factory=_progress)
    except (FileExistsError, FileNotFoundError, ValueError, ServedSpecMismatch,
            ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model_dir": summary["model_dir"], "results": summary["results"]}, indent=2))
    return 0


def _train_served(args: argparse.Namespace, config, train_served) -> dict:
    served = sorted(Path(args.served).glob("served-*.jsonl"))
    if not served:
        raise FileNotFoundError(f"no served-*.jsonl files in {args.served}")
    events = Path(args.events) if args.events else None
    if events is None:
        raise ValueError("--served needs --events (the event log: a file or the traffic "
                         "driver's directory)")
    truth = Path(args.truth) if args.truth else None
    if events.is_dir():
        truth = truth or (events / "truth.parquet" if (events / "truth.parquet").exists()
                          else None)
        events = events / "events.parquet"
    shipped = None
    if args.compare:
        from app.scoring import resolve_version

        name, _, version = args.compare.partition("/")
        shipped = resolve_version(config.models_dir, name, version or "latest")
    return train_served(config, served, events, truth, shipped, say=_say,
                        progress_factory=_progress)


def _train_letor(args: argparse.Namespace) -> int:
    from training.fit import FitConfig
    from training.train_letor import LetorConfig, train_letor

    if not args.test:
        print("error: --letor needs --test TEST (the file the models are evaluated on)",
              file=sys.stderr)
        return 2
    missing = [p for p in (args.letor, args.valid, args.test) if p and not Path(p).is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    config = LetorConfig(
        train=Path(args.letor), test=Path(args.test),
        valid=Path(args.valid) if args.valid else None,
        out_dir=Path(args.out), version=args.version, threads=args.threads,
        fit=FitConfig(epochs=args.epochs, temperature=args.temperature, seed=args.seed,
                      loss=args.loss))
    try:
        summary = train_letor(config, say=_say, progress_factory=_progress)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model_dir": summary["model_dir"], "results": summary["results"]}, indent=2))
    return 0


def cmd_train_image_score(args: argparse.Namespace) -> int:
    from training.image_score.train import ImageScoreConfig, train_image_score

    config = ImageScoreConfig(
        out_dir=Path(args.out), models_dir=Path(args.models_dir or _settings().models_dir),
        version=args.version, crops_per_source=args.crops, gamma=args.gamma,
        pairwise_weight=args.pairwise_weight, epochs=args.epochs, export=args.export,
        brisque=not args.no_brisque)
    try:
        summary = train_image_score(config, say=_say, progress_factory=_progress)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary.get(k) for k in ("model_dir", "results",
                                                   "monotonic_in_strength", "throughput")},
                     indent=2))
    return 0


def cmd_train_moderation(args: argparse.Namespace) -> int:
    from training.moderation.pipeline import train_moderation
    from training.moderation.train import ModerationConfig

    config = ModerationConfig(positives_per_category=args.positives, layers=args.layers,
                              search_epochs=args.search_epochs, eval_epochs=args.eval_epochs,
                              max_skip=args.max_skip)
    summary = train_moderation(config, Path(args.out),
                               Path(args.models_dir or _settings().models_dir), args.version,
                               say=_say)
    print(json.dumps({k: summary[k] for k in ("model_dir", "results",
                                               "parity_max_abs_diff")}, indent=2))
    return 0


def cmd_moderation_score(args: argparse.Namespace) -> int:
    from app.moderation import Moderator
    from feature_jobs.violation_scores import write_violation_scores

    moderator = Moderator(Path(args.model_dir))
    print(json.dumps(_with_engine(lambda engine, alias: write_violation_scores(
        engine, alias, Path(args.listings), moderator, Path(args.state_dir), args.batch)),
        indent=2))
    return 0


def cmd_moderation_add_category(args: argparse.Namespace) -> int:
    from training.moderation.pipeline import add_category

    summary = add_category(Path(args.base), args.name, Path(args.data),
                           Path(args.models_dir or _settings().models_dir), args.version,
                           say=_say)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_images_backfill(args: argparse.Namespace) -> int:
    from feature_jobs.image_backfill import ImageScorer, backfill_image_scores

    scorer = ImageScorer(Path(args.model_dir))
    print(json.dumps(_with_engine(lambda engine, alias: backfill_image_scores(
        engine, alias, Path(args.photos), scorer, Path(args.state_dir), args.batch)),
        indent=2))
    return 0


def _publish_config(args: argparse.Namespace, cls: type[Config], **fields) -> Config:
    """``cls`` (a :class:`feature_jobs.refresh.PublishConfig`) from the shared options;
    a bad value exits with 2 and the reason."""
    s = _settings()
    try:
        return cls(snapshot_dir=Path(args.snapshot_dir or s.snapshot_dir),
                   prefix=s.feature_prefix, grace_s=args.grace_s, lock_ttl_s=args.lock_ttl_s,
                   **fields)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _on_redis(job: Callable[..., Awaitable[dict]]) -> dict:
    """Run ``job(redis)`` on the configured Redis (or Redis Cluster), then close."""
    from app.feature_store import connect_redis

    s = _settings()

    async def run():
        redis = connect_redis(s.redis_url, s.redis_cluster)
        try:
            return await job(redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _publish_job(job: Callable[[], dict]) -> int:
    """Run ``job()`` and print its JSON summary. Exit codes: 0 published; 1 failed
    (the previous version still served); 75 another run holds the lock."""
    from feature_jobs.refresh import LockHeld, RefreshError

    try:
        summary = job()
    except LockHeld as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 75
    except RefreshError as exc:
        print(f"error: {exc}; the previous version is still served", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def cmd_features_refresh(args: argparse.Namespace) -> int:
    from feature_jobs.refresh import RefreshConfig, refresh, refresh_snapshot

    config = _publish_config(
        args, RefreshConfig, events=Path(args.events), window_days=args.window_days,
        max_reject_ratio=args.max_reject_ratio,
        **({"end": datetime.fromisoformat(args.end)} if args.end else {}))
    version = args.version or None
    if _settings().feature_store == "snapshot":
        return _publish_job(lambda: refresh_snapshot(config, version, say=_say))
    return _publish_job(lambda: _on_redis(lambda redis: refresh(
        redis, config, version, say=_say, progress_factory=_progress)))


def cmd_features_republish(args: argparse.Namespace) -> int:
    from feature_jobs.refresh import PublishConfig, republish

    if _settings().feature_store == "snapshot":
        print("error: republish writes a snapshot back into Redis; with "
              "BESTMATCH_FEATURE_STORE=snapshot the service reads the snapshot files",
              file=sys.stderr)
        return 2
    config = _publish_config(args, PublishConfig)
    return _publish_job(lambda: _on_redis(lambda redis: republish(
        redis, config, args.version or None, say=_say, progress_factory=_progress)))


def cmd_demo(args: argparse.Namespace) -> int:
    from bestmatch.demo import build_demo

    build_demo(args.listings, args.seed, Path(args.workdir), args.sessions or None)
    if not args.serve:
        return 0
    s = _settings()
    url = f"http://{args.host or s.host}:{args.port or s.port}"
    print(f"[demo] ready: serving on {url} (OpenAPI docs: {url}/docs), e.g.\n"
          f"  curl -s -G {url}/v1/search --data-urlencode 'query=ナイキ スニーカー' -d size=5",
          file=sys.stderr, flush=True)
    return cmd_serve(args)


@dataclass(frozen=True)
class Command:
    """One ``bestmatch`` command: its words, help, options and what runs it."""

    words: str  # "features refresh"
    help: str
    run: Callable[[argparse.Namespace], int]
    options: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()
    epilog: str | None = None


def opt(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


SERVE = (
    opt("--host", help="default: BESTMATCH_HOST (127.0.0.1)"),
    opt("--port", type=int, help="default: BESTMATCH_PORT (8000)"),
    opt("--workers", type=int, help="default: BESTMATCH_WORKERS (1)"),
    opt("--access-log", action="store_true", help="log every request"),
)
SIMULATION = (
    opt("--listings", type=int, default=100_000),
    opt("--sessions", type=int, default=50_000, help="human search sessions"),
    opt("--queries", type=int, default=3_000, help="distinct queries"),
    opt("--page-size", type=int, default=40),
    opt("--seed", type=int, default=0),
    opt("--now", default="", help="ISO time the log window ends (default today)"),
)
MODELS_DIR = opt("--models-dir", help="default: BESTMATCH_MODELS_DIR")
VERSION = opt("--version", default="", help="model version (default: UTC timestamp)")


def publishing(version_help: str) -> tuple:
    return (
        opt("--snapshot-dir", default="",
            help="snapshot Parquet files, rejected rows and CURRENT, the last published "
                 "version (default: BESTMATCH_SNAPSHOT_DIR, var/embedded/features)"),
        opt("--grace-s", type=int, default=6 * 3600,
            help="TTL given to the previous version's keys after the switch"),
        opt("--lock-ttl-s", type=float, default=30.0,
            help="TTL of the Redis lock, renewed every TTL/3 while the job runs: how long a "
                 "killed run blocks the next one (default 30, at least 3)"),
        opt("--version", default="", help=version_help),
    )


TRAIN_LTR_EPILOG = ("with --letor or --served the simulator options are not used; exit "
                    "codes: 0 trained; 2 bad options or files (e.g. a missing --test, served "
                    "logs of another feature spec)")
PUBLISH_EXIT_CODES = ("exit codes: 0 published; 1 failed (the previous version is still "
                      "served); 2 bad options; 75 another run holds the lock (retry later)")
GROUPS = {
    "model": "model utilities",
    "simulate": "the marketplace simulator: offline logs, or live traffic to a service",
    "train": "offline trainers",
    "moderation": "prohibited-item detectors: scoring job, new categories",
    "images": "Image Score jobs",
    "features": "feature store jobs",
}
COMMANDS: tuple[Command, ...] = (
    Command("serve", "run the HTTP service (configured by BESTMATCH_* env)", cmd_serve, SERVE),
    Command("devstack", "real OpenSearch + Redis on loopback for dev/tests", cmd_devstack, (
        opt("action", choices=["up", "down", "env"],
            help="up: start or reuse, print exports; env: same, plain lines; down: stop"),)),
    Command("index", "index a listings JSON-lines file behind the alias", cmd_index, (
        opt("--input", required=True),
        opt("--rejects", help="where rejected rows go (default: INPUT.rejects.jsonl)"),
        opt("--keep-previous", type=int, default=1,
            help="older index versions kept for rollback"))),
    Command("model baseline", "write the hand-set baseline ranker", cmd_model_baseline, (
        opt("--models-dir"), opt("--version", default="1"))),
    Command("simulate logs", "simulate a marketplace: catalog, event logs, truth",
            cmd_simulate, (opt("--out", default="var/sim"), *SIMULATION)),
    Command("simulate traffic", "simulated users search a running service over HTTP and "
            "act on its answers: event log + ground truth", cmd_simulate_traffic, (
                opt("--url", required=True, help="the service, e.g. http://127.0.0.1:8000"),
                opt("--sim-dir", required=True,
                    help="the simulation the service's catalog came from (its summary.json), "
                         "e.g. var/demo/sim-20000-seed0"),
                opt("--sessions", type=int, default=1000),
                opt("--concurrency", type=int, default=8, help="requests in flight"),
                opt("--seed", type=int, default=0),
                opt("--page-size", type=int, default=40),
                opt("--max-seconds", type=float, default=600.0,
                    help="stop sending after this long"),
                opt("--timeout-s", type=float, default=5.0, help="per request"),
                opt("--out", required=True, help="events.parquet, truth.parquet, summary.json"))),
    Command("train ltr", "simulate (or reuse) logs, train, evaluate, export the ranker; or "
            "with --letor, the same on LETOR / SVMlight files", cmd_train_ltr, (
                opt("--letor", metavar="TRAIN", default="",
                    help="train on this LETOR file instead of simulator logs (needs --test)"),
                opt("--valid", metavar="VALID", default="",
                    help="with --letor: validation file (default: 20%% of the training "
                         "queries, never the test file)"),
                opt("--test", metavar="TEST", default="",
                    help="with --letor: the file every model is evaluated on"),
                opt("--loss", default="approx_ndcg", choices=["approx_ndcg", "listnet"],
                    help="with --letor: the MLP's loss"),
                opt("--served", metavar="DIR", default="",
                    help="train on what the service served: its served-feature log "
                         "directory (BESTMATCH_FEATURE_LOG_DIR), with --events"),
                opt("--events", metavar="PATH", default="",
                    help="with --served: the event log (Parquet / JSON lines), or a "
                         "`simulate traffic` directory (events.parquet, truth.parquet)"),
                opt("--compare", metavar="NAME/VERSION", default="",
                    help="with --served: also evaluate this model of MODELS_DIR (e.g. the "
                         "shipped ltr/1) on the same held-out lists"),
                opt("--truth", metavar="FILE", default="",
                    help="with --served: true relevance for evaluation (default: "
                         "truth.parquet beside the events; none: engagement labels)"),
                opt("--sim-dir", default="var/sim", help="reused when it holds a simulation"),
                opt("--out", default="var/ltr", help="report and results go to OUT/VERSION "
                    "(with --letor also the model, in OUT/VERSION/model)"),
                MODELS_DIR, VERSION,
                opt("--epochs", type=int, default=12, help="at least this many passes (and "
                    "at least 1000 optimiser steps)"),
                opt("--temperature", type=float, default=1.0, help="ApproxNDCG temperature"),
                opt("--export", default="mlp_approx_ndcg_ips",
                    choices=["mlp_approx_ndcg_ips", "mlp_approx_ndcg", "mlp_listnet"],
                    help="simulator path: the variant exported to MODELS_DIR/ltr/VERSION"),
                opt("--threads", type=int, default=2, help="torch CPU threads"),
                *SIMULATION), TRAIN_LTR_EPILOG),
    Command("train image-score", "degraded photos -> embeddings -> focal-loss head -> OPA/CA "
            "vs baselines -> ONNX", cmd_train_image_score, (
                opt("--out", default="var/image-score", help="results go to OUT/VERSION"),
                MODELS_DIR, VERSION,
                opt("--crops", type=int, default=16, help="base crops per source photo"),
                opt("--gamma", type=float, default=2.0, help="focal loss gamma"),
                opt("--pairwise-weight", type=float, default=3.0),
                opt("--epochs", type=int, default=80),
                opt("--export", default="focal_pairwise",
                    choices=["focal_pairwise", "focal", "cross_entropy", ""]),
                opt("--no-brisque", action="store_true", help="skip the BRISQUE baseline"))),
    Command("train moderation", "simulated violations -> DARTS search -> derived detectors "
            "per category vs baseline -> report -> ONNX bundle", cmd_train_moderation, (
                opt("--out", default="var/moderation", help="report goes to OUT/VERSION"),
                MODELS_DIR, VERSION,
                opt("--positives", type=int, default=300, help="positives per category"),
                opt("--layers", type=int, default=5),
                opt("--search-epochs", type=int, default=6),
                opt("--eval-epochs", type=int, default=8),
                opt("--max-skip", type=int, default=2, help="skip cap of derived cells"))),
    Command("moderation score", "write violation_score / violation_category into the index "
            "(bulk partial updates, resumable)", cmd_moderation_score, (
                opt("--listings", required=True,
                    help='JSON lines {"id", "title", "description", "price", "photo"}'),
                opt("--model-dir", required=True, help="models/moderation/VERSION"),
                opt("--state-dir", default="var/moderation-scores"),
                opt("--batch", type=int, default=32))),
    Command("moderation add-category", "labelled data -> a new detector, exported with the "
            "base bundle's as a new version", cmd_moderation_add_category, (
                opt("--name", required=True),
                opt("--data", required=True,
                    help='JSON lines {"title", "description", "price", "photo", "label"}'),
                opt("--base", required=True, help="models/moderation/VERSION to extend"),
                opt("--version", required=True, help="the new version"),
                MODELS_DIR)),
    Command("images backfill", "score listing photos, write image_score into the index "
            "(bulk partial updates, resumable)", cmd_images_backfill, (
                opt("--photos", required=True, help='JSON lines {"id": ..., "photo": path}'),
                opt("--model-dir", required=True, help="models/image_score/VERSION"),
                opt("--state-dir", default="var/image-backfill", help="checkpoint and rejects"),
                opt("--batch", type=int, default=32))),
    Command("features refresh", "event logs -> item CTR / impression prob -> a new version "
            "in the feature store (BESTMATCH_FEATURE_STORE: snapshot files, or Redis at "
            "BESTMATCH_REDIS_URL under BESTMATCH_FEATURE_PREFIX)", cmd_features_refresh, (
                opt("--events", required=True, help="Parquet or JSON-lines event log"),
                opt("--end", default="", help="ISO time the window ends (default today 00:00Z)"),
                opt("--window-days", type=int, default=7),
                opt("--max-reject-ratio", type=float, default=0.01),
                *publishing("default: END date + UTC time")), PUBLISH_EXIT_CODES),
    Command("features republish", "write a published version back into Redis from its "
            "Parquet snapshot and point at it (after Redis lost its data)",
            cmd_features_republish,
            publishing("the snapshot to republish (default: the last published, CURRENT)"),
            PUBLISH_EXIT_CODES),
    Command("demo", "simulated marketplace -> index + features + model in the configured "
            "backends (embedded by default)", cmd_demo, (
                opt("--listings", type=int, default=20000),
                opt("--sessions", type=int, default=0,
                    help="simulated search sessions (default: listings / 2)"),
                opt("--seed", type=int, default=0),
                opt("--workdir", default="var/demo"),
                opt("--serve", action="store_true", help="start the service afterwards"),
                *SERVE)),
)


def build_parser() -> argparse.ArgumentParser:
    """The command line, from :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="bestmatch", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, Any] = {}
    for command in COMMANDS:
        group, _, name = command.words.rpartition(" ")
        if group and group not in groups:
            groups[group] = top.add_parser(group, help=GROUPS[group]).add_subparsers(
                dest=f"{group}_command", required=True)
        p = (groups[group] if group else top).add_parser(name, help=command.help,
                                                         epilog=command.epilog)
        for flags, kwargs in command.options:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
