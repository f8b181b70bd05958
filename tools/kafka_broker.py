"""A real single-node Kafka broker on 127.0.0.1 for development and tests: start, check, stop.

No maintained Python package starts a Kafka broker without Docker (testcontainers needs a Docker
daemon, the others Kafka's tarball from the Apache download site; mocks of the Python client
leave Spark's JVM reader nothing to connect to), so this starts Kafka's own broker:
``java -cp <kafka-broker jars> kafka.Kafka server.properties``, with the jars that
``tools/fetch_kafka_jars.py`` put in ``<venv>/share/ecom-pipeline/kafka-broker`` at set-up time.
The broker runs KRaft in combined mode (``process.roles=broker,controller``) with a static
single-voter quorum, so the controller's port may change from one start to the next while the
data stays. Everything lives under one folder (``KAFKA_DIR``, default ``.kafka/``): the generated
``server.properties`` and ``log4j2.properties``, ``data/`` (formatted once with a new cluster
id), ``logs/server.log`` and ``broker.pid``.

From the shell (``make kafka-up`` / ``make kafka-down``)::

    python tools/kafka_broker.py up       # returns once the broker answers a metadata request
    python tools/kafka_broker.py status
    python tools/kafka_broker.py down     # SIGTERM, then SIGKILL after 30 s; no-op when not running

``KAFKA_PORT`` (default 9092) and ``KAFKA_DIR`` set the port and the folder; ``--port``,
``--dir`` and ``--partitions`` override them. From Python (pytest)::

    with start_broker(tmp_path / "kafka") as broker:   # port=None: a free port
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

Readiness is checked with confluent-kafka's admin client: the broker is ready when its metadata
lists itself, which a KRaft broker does only once it is registered and unfenced.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

try:  # imported as tools.kafka_broker (the tests, from the project's root)
    from tools.ports import free_port, port_is_free
except ModuleNotFoundError:  # run as a script: python tools/kafka_broker.py
    from ports import free_port, port_is_free  # type: ignore[no-redef]

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_DIR = ".kafka"
DEFAULT_PARTITIONS = 3
HEAP = "512m"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
BROKER_JARS = Path(sys.prefix) / "share" / "ecom-pipeline" / "kafka-broker"
NODE_ID = 1
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


class KafkaBrokerError(RuntimeError):
    """The broker could not be started or stopped; the message says why and where to look."""


def broker_classpath(jars_dir: Path = BROKER_JARS) -> str:
    """The broker's class path, ``<jars_dir>/*``; raises when ``make setup`` has not fetched it."""
    if not any(jars_dir.glob("kafka_2.13-*.jar")):
        raise KafkaBrokerError(
            f"Kafka broker jars not found in {jars_dir}: run `make setup` "
            "(tools/fetch_kafka_jars.py fetches them from Maven Central once)"
        )
    return f"{jars_dir}/*"


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` from PATH; Kafka 4 needs Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise KafkaBrokerError("java not found (set JAVA_HOME or put a Java 17+ on PATH)")
    return found


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's Uuid).

    Never one starting with ``-``, which ``kafka-storage format --cluster-id`` would read as an
    option (one id in 64; Kafka's ``Uuid.randomUuid`` draws again for the same reason).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(*, data_dir: Path, port: int, controller_port: int, partitions: int) -> str:
    """The broker's configuration: one combined node, everything replicated once, no waiting."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        # A static quorum (not `format --standalone`): the voter's address is read from here at
        # each start instead of being written into the metadata log, so a new controller port
        # on the next `up` keeps the data.
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": data_dir,
        "auto.create.topics.enable": "true",
        "num.partitions": partitions,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        # 50 partitions each by default: their creation delays the first consumer group.
        "offsets.topic.num.partitions": 5,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 5,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        # Two cores: Kafka's defaults (3 network, 8 I/O threads) only add context switches.
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j_properties(logs_dir: Path) -> str:
    """Log4j 2 configuration: everything into ``logs/server.log``, nothing on the console."""
    return (
        "status = warn\n"
        "appender.server.type = File\n"
        "appender.server.name = server\n"
        f"appender.server.fileName = {logs_dir / 'server.log'}\n"
        "appender.server.layout.type = PatternLayout\n"
        "appender.server.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.server.ref = server\n"
        # One line per request or per partition state change: noise for a test broker.
        "logger.request.name = kafka.request.logger\n"
        "logger.request.level = WARN\n"
        "logger.statechange.name = state.change.logger\n"
        "logger.statechange.level = WARN\n"
    )


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        for line in status.read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line.split()[1]
    return True


def _is_our_broker(pid: int, config: Path) -> bool:
    """Whether ``pid`` is the broker JVM started with ``config`` (not a reused pid)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return _process_alive(pid)
    with contextlib.suppress(OSError):
        args = cmdline.read_bytes().split(b"\0")
        return MAIN_CLASS.encode() in args and str(config).encode() in args and _process_alive(pid)
    return False


@dataclass
class Broker:
    """A broker process started by :func:`start_broker` (or found by :func:`running_broker`)."""

    pid: int
    port: int
    kafka_dir: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``: ``bootstrap.servers`` for clients, ``kafka.bootstrap.servers`` for Spark."""
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's log (log4j); the JVM's own output goes to ``logs/stdout.log`` beside it."""
        return self.kafka_dir / "logs" / "server.log"

    @property
    def pid_file(self) -> Path:
        """``broker.pid``: how ``status`` and ``down`` in another process find the broker."""
        return self.kafka_dir / "broker.pid"

    def is_running(self) -> bool:
        """Whether the broker's JVM still runs."""
        if self._process is not None:
            return self._process.poll() is None
        return _is_our_broker(self.pid, self.kafka_dir / "server.properties")

    def rss_bytes(self) -> int | None:
        """The broker JVM's resident memory, or None when it is not running (Linux only)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (Kafka shuts down cleanly), SIGKILL after ``timeout`` s; a no-op when not running."""
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if not self._wait_gone(timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self._wait_gone(10.0)
        self.pid_file.unlink(missing_ok=True)

    def _wait_gone(self, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _process_alive(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def running_broker(kafka_dir: str | os.PathLike[str]) -> Broker | None:
    """The broker that ``broker.pid`` in ``kafka_dir`` names, if it still runs; else None."""
    kafka_dir = Path(kafka_dir).resolve()
    pid_file = kafka_dir / "broker.pid"
    config = kafka_dir / "server.properties"
    try:
        pid = int(pid_file.read_text().strip())
        settings = dict(line.split("=", 1) for line in config.read_text().splitlines() if "=" in line)
    except (OSError, ValueError):
        return None
    if not _is_our_broker(pid, config):
        return None
    port = int(settings["advertised.listeners"].rsplit(":", 1)[1])
    return Broker(pid=pid, port=port, kafka_dir=kafka_dir)


def _tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


def _last_words(broker: Broker) -> str:
    """The end of the broker's log, or of the JVM's own output when log4j never started."""
    return _tail(broker.log_file) or _tail(broker.log_file.with_name("stdout.log"))


def _format_storage(java: str, classpath: str, config: Path, data_dir: Path) -> None:
    """Format ``data_dir`` for a new cluster, unless an earlier start already did."""
    if (data_dir / "meta.properties").is_file():
        return
    result = subprocess.run(
        [
            java,
            "-Xmx256m",
            "-cp",
            classpath,
            STORAGE_TOOL,
            "format",
            "--config",
            str(config),
            "--cluster-id",
            new_cluster_id(),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise KafkaBrokerError(f"could not format Kafka's storage in {data_dir}:\n{tail}")


def wait_until_ready(broker: Broker, timeout: float = READY_TIMEOUT_S) -> None:
    """Return once the broker's metadata lists the broker itself; raise after ``timeout`` s."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger(f"{__name__}.readiness")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not broker.is_running():
            raise KafkaBrokerError(
                f"the Kafka broker exited while starting; see {broker.log_file} and "
                f"{broker.log_file.with_name('stdout.log')}:\n{_last_words(broker)}"
            )
        # A TCP connect first: librdkafka would print every refused connection.
        try:
            socket.create_connection((HOST, broker.port), timeout=1.0).close()
        except OSError:
            time.sleep(0.2)
            continue
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers, "logger": quiet})
        with contextlib.suppress(Exception):
            if NODE_ID in admin.list_topics(timeout=2.0).brokers:
                return
        time.sleep(0.2)
    raise KafkaBrokerError(
        f"the Kafka broker at {broker.bootstrap_servers} did not answer within {timeout:.0f} s; "
        f"see {broker.log_file}"
    )


def start_broker(
    kafka_dir: str | os.PathLike[str],
    port: int | None = None,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    heap: str = HEAP,
    timeout: float = READY_TIMEOUT_S,
) -> Broker:
    """Start a broker with its files under ``kafka_dir`` and return it once it accepts clients.

    Args:
        kafka_dir: The broker's folder, created if needed; data in it survives a stop and is
            served again by the next start.
        port: The client port on 127.0.0.1; None picks a free one.
        partitions: ``num.partitions``: the partition count of auto-created topics.
        heap: The JVM's maximum heap (``-Xmx``).
        timeout: Seconds to wait for the broker to answer before stopping it and raising.

    Returns:
        The running broker; stop it with ``.stop()`` or a ``with`` block.

    Raises:
        KafkaBrokerError: a broker already runs from ``kafka_dir``, the port is taken, the jars
            or java are missing, or the broker did not start (the message names its log).
    """
    kafka_dir = Path(kafka_dir).resolve()
    already = running_broker(kafka_dir)
    if already is not None:
        raise KafkaBrokerError(
            f"a Kafka broker already runs from {kafka_dir} (pid {already.pid}, {already.bootstrap_servers})"
        )
    port = free_port() if port is None else port
    if not port_is_free(port):
        raise KafkaBrokerError(f"port {port} on {HOST} is in use (another Kafka broker?); choose another")
    classpath = broker_classpath()
    java = java_executable()
    if importlib.util.find_spec("confluent_kafka") is None:
        raise KafkaBrokerError(
            "confluent-kafka (the client that checks the broker is ready) is not installed: run `make setup`"
        )
    data_dir = kafka_dir / "data"
    logs_dir = kafka_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    # Keeps the folder out of git wherever it is created.
    (kafka_dir / ".gitignore").write_text("*\n")
    config = kafka_dir / "server.properties"
    config.write_text(
        server_properties(data_dir=data_dir, port=port, controller_port=free_port(), partitions=partitions)
    )
    log_config = kafka_dir / "log4j2.properties"
    log_config.write_text(log4j_properties(logs_dir))
    _format_storage(java, classpath, config, data_dir)
    command = [
        java,
        "-Xms64m",
        f"-Xmx{heap}",
        # A small heap on two cores: the serial collector needs no GC threads of its own, and
        # the quick compiler alone starts the broker sooner and smaller (measured: about 1-3 s
        # and 30 MiB less) at a throughput that a test broker does not need.
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        f"-Dkafka.logs.dir={logs_dir}",
        "-cp",
        classpath,
        MAIN_CLASS,
        str(config),
    ]
    with (logs_dir / "stdout.log").open("ab") as stdout:
        # Its own session: Ctrl-C in the shell that ran `up` does not reach the broker.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    broker = Broker(pid=process.pid, port=port, kafka_dir=kafka_dir, _process=process)
    broker.pid_file.write_text(f"{process.pid}\n")
    try:
        wait_until_ready(broker, timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A single-node Kafka broker (KRaft) on 127.0.0.1.")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", DEFAULT_PORT)))
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("KAFKA_DIR", DEFAULT_DIR)))
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    args = parser.parse_args(argv)
    broker = running_broker(args.dir)
    if args.action == "status":
        if broker is None:
            print(f"kafka: not running ({args.dir})")
            return 1
        rss = broker.rss_bytes()
        memory = f", {rss / 2**20:.0f} MiB resident" if rss else ""
        print(
            f"kafka: running at {broker.bootstrap_servers} (pid {broker.pid}{memory}, log {broker.log_file})"
        )
        return 0
    if args.action == "down":
        if broker is not None:
            broker.stop()
            print(f"kafka: stopped (pid {broker.pid})")
        else:
            (args.dir / "broker.pid").unlink(missing_ok=True)
        return 0
    if broker is not None and broker.port != args.port:
        print(
            f"kafka: already running at {broker.bootstrap_servers} (pid {broker.pid}), not on port "
            f"{args.port}; run `down` first",
            file=sys.stderr,
        )
        return 1
    if broker is not None:
        print(f"kafka: already running at {broker.bootstrap_servers} (pid {broker.pid})")
        return 0
    started = time.monotonic()
    try:
        broker = start_broker(args.dir, args.port, partitions=args.partitions)
    except KafkaBrokerError as error:
        print(f"kafka: {error}", file=sys.stderr)
        return 1
    print(
        f"kafka: running at {broker.bootstrap_servers} (pid {broker.pid}, up in "
        f"{time.monotonic() - started:.1f} s; log {broker.log_file}; stop with `down`)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
