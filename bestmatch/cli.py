"""``bestmatch <command>``: one entry point for the service, the jobs and dev servers.

Run ``bestmatch --help`` (or ``bestmatch <command> --help``) for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

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
    uvicorn.run("app.api:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=s.log_level.lower(), access_log=args.access_log)
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


def cmd_train_ltr(args: argparse.Namespace) -> int:
    from training.fit import FitConfig
    from training.train_ltr import LtrConfig, train_ltr

    config = LtrConfig(
        sim_dir=Path(args.sim_dir), out_dir=Path(args.out), version=args.version,
        models_dir=Path(args.models_dir or _settings().models_dir), sim=_sim_config(args),
        fit=FitConfig(epochs=args.epochs, temperature=args.temperature, seed=args.seed),
        export=args.export, threads=args.threads)
    try:
        summary = train_ltr(config, say=_say,
                            progress_factory=_progress)
    except FileExistsError as exc:
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
    url = f"http://{args.host}:{args.port}"
    print(f"[demo] ready: serving on {url} (OpenAPI docs: {url}/docs), e.g.\n"
          f"  curl -s -G {url}/v1/search --data-urlencode 'query=ナイキ スニーカー' -d size=5",
          file=sys.stderr, flush=True)
    return cmd_serve(args)


def build_parser() -> argparse.ArgumentParser:
    """The command line: every command and its options."""
    parser = argparse.ArgumentParser(prog="bestmatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def serve_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default=os.environ.get("BESTMATCH_HOST", "127.0.0.1"))
        p.add_argument("--port", type=int, default=int(os.environ.get("BESTMATCH_PORT", 8000)))
        p.add_argument("--workers", type=int, default=int(os.environ.get("BESTMATCH_WORKERS", 1)))
        p.add_argument("--access-log", action="store_true", help="log every request")

    p = sub.add_parser("serve", help="run the HTTP service (configured by BESTMATCH_* env)")
    serve_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("devstack", help="real OpenSearch + Redis on loopback for dev/tests")
    p.add_argument("action", choices=["up", "down", "env"],
                   help="up: start or reuse, print exports; env: same, plain lines; down: stop")
    p.set_defaults(func=cmd_devstack)

    p = sub.add_parser("index", help="index a listings JSON-lines file behind the alias")
    p.add_argument("--input", required=True)
    p.add_argument("--rejects", help="where rejected rows go (default: INPUT.rejects.jsonl)")
    p.add_argument("--keep-previous", type=int, default=1,
                   help="older index versions kept for rollback")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("model", help="model utilities")
    msub = p.add_subparsers(dest="model_command", required=True)
    b = msub.add_parser("baseline", help="write the hand-set baseline ranker")
    b.add_argument("--models-dir")
    b.add_argument("--version", default="1")
    b.set_defaults(func=cmd_model_baseline)

    def sim_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--listings", type=int, default=100_000)
        p.add_argument("--sessions", type=int, default=50_000, help="human search sessions")
        p.add_argument("--queries", type=int, default=3_000, help="distinct queries")
        p.add_argument("--page-size", type=int, default=40)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--now", default="", help="ISO time the log window ends (default today)")

    p = sub.add_parser("simulate", help="simulate a marketplace: catalog, event logs, truth")
    p.add_argument("--out", default="var/sim")
    sim_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("train", help="offline trainers")
    tsub = p.add_subparsers(dest="train_command", required=True)
    t = tsub.add_parser("ltr", help="simulate (or reuse) logs, train, evaluate, export the ranker")
    t.add_argument("--sim-dir", default="var/sim", help="reused when it holds a simulation")
    t.add_argument("--out", default="var/ltr", help="report and results go to OUT/VERSION")
    t.add_argument("--models-dir", help="default: BESTMATCH_MODELS_DIR")
    t.add_argument("--version", default="", help="model version (default: UTC timestamp)")
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--temperature", type=float, default=1.0, help="ApproxNDCG temperature")
    t.add_argument("--export", default="mlp_approx_ndcg_ips",
                   choices=["mlp_approx_ndcg_ips", "mlp_approx_ndcg", "mlp_listnet"])
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    sim_options(t)
    t.set_defaults(func=cmd_train_ltr)
    t = tsub.add_parser("image-score", help="degraded photos -> embeddings -> focal-loss "
                        "head -> OPA/CA vs baselines -> ONNX")
    t.add_argument("--out", default="var/image-score", help="results go to OUT/VERSION")
    t.add_argument("--models-dir", help="default: BESTMATCH_MODELS_DIR")
    t.add_argument("--version", default="", help="model version (default: UTC timestamp)")
    t.add_argument("--crops", type=int, default=16, help="base crops per source photo")
    t.add_argument("--gamma", type=float, default=2.0, help="focal loss gamma")
    t.add_argument("--pairwise-weight", type=float, default=3.0)
    t.add_argument("--epochs", type=int, default=80)
    t.add_argument("--export", default="focal_pairwise",
                   choices=["focal_pairwise", "focal", "cross_entropy", ""])
    t.add_argument("--no-brisque", action="store_true", help="skip the BRISQUE baseline")
    t.set_defaults(func=cmd_train_image_score)
    t = tsub.add_parser("moderation", help="simulated violations -> DARTS search -> derived "
                        "detectors per category vs baseline -> report -> ONNX bundle")
    t.add_argument("--out", default="var/moderation", help="report goes to OUT/VERSION")
    t.add_argument("--models-dir", help="default: BESTMATCH_MODELS_DIR")
    t.add_argument("--version", default="", help="model version (default: UTC timestamp)")
    t.add_argument("--positives", type=int, default=300, help="positives per category")
    t.add_argument("--layers", type=int, default=5)
    t.add_argument("--search-epochs", type=int, default=6)
    t.add_argument("--eval-epochs", type=int, default=8)
    t.add_argument("--max-skip", type=int, default=2, help="skip cap of derived cells")
    t.set_defaults(func=cmd_train_moderation)

    p = sub.add_parser("moderation", help="prohibited-item detectors: scoring job, new "
                       "categories")
    msub = p.add_subparsers(dest="moderation_command", required=True)
    m = msub.add_parser("score", help="write violation_score / violation_category into the "
                        "index (bulk partial updates, resumable)")
    m.add_argument("--listings", required=True,
                   help='JSON lines {"id", "title", "description", "price", "photo"}')
    m.add_argument("--model-dir", required=True, help="models/moderation/VERSION")
    m.add_argument("--state-dir", default="var/moderation-scores")
    m.add_argument("--batch", type=int, default=32)
    m.set_defaults(func=cmd_moderation_score)
    m = msub.add_parser("add-category", help="labelled data -> a new detector, exported with "
                        "the base bundle's as a new version")
    m.add_argument("--name", required=True)
    m.add_argument("--data", required=True,
                   help='JSON lines {"title", "description", "price", "photo", "label"}')
    m.add_argument("--base", required=True, help="models/moderation/VERSION to extend")
    m.add_argument("--version", required=True, help="the new version")
    m.add_argument("--models-dir", help="default: BESTMATCH_MODELS_DIR")
    m.set_defaults(func=cmd_moderation_add_category)

    p = sub.add_parser("images", help="Image Score jobs")
    isub = p.add_subparsers(dest="images_command", required=True)
    i = isub.add_parser("backfill", help="score listing photos, write image_score into the "
                        "index (bulk partial updates, resumable)")
    i.add_argument("--photos", required=True, help='JSON lines {"id": ..., "photo": path}')
    i.add_argument("--model-dir", required=True, help="models/image_score/VERSION")
    i.add_argument("--state-dir", default="var/image-backfill",
                   help="checkpoint and rejects")
    i.add_argument("--batch", type=int, default=32)
    i.set_defaults(func=cmd_images_backfill)

    p = sub.add_parser("features", help="feature store jobs")
    fsub = p.add_subparsers(dest="features_command", required=True)
    exit_codes = ("exit codes: 0 published; 1 failed (the previous version is still served); "
                  "2 bad options; 75 another run holds the lock (retry later)")

    def publish_options(f: argparse.ArgumentParser, version_help: str) -> None:
        f.add_argument("--snapshot-dir", default="",
                       help="snapshot Parquet files, rejected rows and CURRENT, the last "
                            "published version (default: BESTMATCH_SNAPSHOT_DIR, "
                            "var/embedded/features)")
        f.add_argument("--grace-s", type=int, default=6 * 3600,
                       help="TTL given to the previous version's keys after the switch")
        f.add_argument("--lock-ttl-s", type=float, default=30.0,
                       help="TTL of the Redis lock, renewed every TTL/3 while the job runs: "
                            "how long a killed run blocks the next one (default 30, at least 3)")
        f.add_argument("--version", default="", help=version_help)

    f = fsub.add_parser("refresh", help="event logs -> item CTR / impression prob -> a new "
                        "version in the feature store (BESTMATCH_FEATURE_STORE: snapshot files, "
                        "or Redis at BESTMATCH_REDIS_URL under BESTMATCH_FEATURE_PREFIX)",
                        epilog=exit_codes)
    f.add_argument("--events", required=True, help="Parquet or JSON-lines event log")
    f.add_argument("--end", default="", help="ISO time the window ends (default today 00:00Z)")
    f.add_argument("--window-days", type=int, default=7)
    f.add_argument("--max-reject-ratio", type=float, default=0.01)
    publish_options(f, "default: END date + UTC time")
    f.set_defaults(func=cmd_features_refresh)
    f = fsub.add_parser("republish", help="write a published version back into Redis from "
                        "its Parquet snapshot and point at it (after Redis lost its data)",
                        epilog=exit_codes)
    publish_options(f, "the snapshot to republish (default: the last published, CURRENT)")
    f.set_defaults(func=cmd_features_republish)

    p = sub.add_parser("demo", help="simulated marketplace -> index + features + model "
                       "in the configured backends (embedded by default)")
    p.add_argument("--listings", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=0,
                   help="simulated search sessions (default: listings / 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="var/demo")
    p.add_argument("--serve", action="store_true", help="start the service afterwards")
    serve_options(p)
    p.set_defaults(func=cmd_demo)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
