"""Fixtures for integration tests: the kvscale operator as a real subprocess.

`operator` runs `.venv/bin/kvscale operator` against the session's cluster (the `cluster`
fixture in tests/conftest.py), with the InferenceDeployment CRD installed and its /metrics on
127.0.0.1 (`Operator.metrics_port`, a free port; the chaos tests' Prometheus scrapes it). Its
log goes to a file; when a test fails, the part of the log written during that test is printed
with the failure. The process is stopped with SIGTERM at the end of the module (and must exit 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import pathlib
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator

import pytest
from tests.integration import chartrbac
from tests.support import prometheus, wait

from kvscale.api import crd
from kvscale.localstack import cluster as local
from kvscale.localstack import engine_env, tools

ROOT = pathlib.Path(__file__).resolve().parents[2]
KVSCALE = ROOT / ".venv" / "bin" / "kvscale"


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keeps each phase's report on the test item, so fixtures can tell a failure."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclasses.dataclass
class Operator:
    """One `kvscale operator` process at a time, restartable, logging to `log_path`."""

    cluster: local.Cluster
    log_path: pathlib.Path
    process: subprocess.Popen[bytes] | None = None
    exit_codes: list[int] = dataclasses.field(default_factory=list)
    # Credentials other than the cluster's admin (a service account's token, say).
    kubeconfig: pathlib.Path | None = None
    extra_args: tuple[str, ...] = ()
    metrics_port: int = 0  # where the running process serves /metrics (on 127.0.0.1)

    def start(self) -> None:
        assert self.process is None, "the operator is already running"
        if not KVSCALE.exists():
            pytest.fail(f"{KVSCALE} is missing: run `make venv`", pytrace=False)
        port = _free_port()
        self.metrics_port = _free_port()
        with self.log_path.open("ab") as log:
            # test_leader_election reads the liveness port back from this line's
            # "(liveness on port N)".
            log.write(
                f"--- starting the operator (liveness on port {port}) "
                f"(metrics on port {self.metrics_port})\n".encode()
            )
            log.flush()
            self.process = subprocess.Popen(
                [
                    str(KVSCALE),
                    "operator",
                    "--kubeconfig",
                    str(self.kubeconfig or self.cluster.kubeconfig),
                    "--health-port",
                    str(port),
                    "--metrics-port",
                    str(self.metrics_port),
                    "--listen-host",
                    "127.0.0.1",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.cluster.env(),
                cwd=ROOT,
            )
        url = f"http://127.0.0.1:{port}/healthz"

        def alive() -> bool:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(
                    f"the operator exited with {self.process.returncode} at start:\n{self.log()}",
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait.eventually(
            alive, "the operator's liveness endpoint", timeout_s=60, retry_on=wait.NOT_MADE_YET
        )

    def stop(self) -> int:
        """SIGTERM, then the exit code (SIGKILL after 30 s, which the caller sees as -9)."""
        process, self.process = self.process, None
        if process is None:
            return 0
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        self.exit_codes.append(code)
        with self.log_path.open("ab") as log:
            log.write(f"--- the operator exited with {code}\n".encode())
        return code

    def restart(self) -> None:
        code = self.stop()
        assert code == 0, f"the operator exited with {code} on SIGTERM:\n{self.log()}"
        self.start()

    def log(self, since: int = 0) -> str:
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0


@pytest.fixture(scope="module")
def operator_process(
    cluster: local.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator running against the session's cluster, with the CRD installed; under the
    Helm chart's ServiceAccount and RBAC when KVSCALE_OPERATOR_RBAC=chart (see chartrbac)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / crd.YAML_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")
    directory = tmp_path_factory.mktemp("operator")
    log_path = directory / "operator.log"
    running = Operator(cluster=cluster, log_path=log_path)
    if chartrbac.wanted():
        running.kubeconfig, running.extra_args = chartrbac.credentials(cluster, directory)
    running.start()
    try:
        yield running
    finally:
        code = running.stop()
        if chartrbac.wanted():
            chartrbac.revoke(cluster)
        if code != 0:
            sys.stderr.write(f"operator log:\n{running.log()}\n")
        assert code == 0, f"the operator exited with {code} on SIGTERM (log: {log_path})"
        denied = chartrbac.denials(running.log())
        assert not denied, f"RBAC denied the operator ({chartrbac.USER}):\n" + "\n".join(denied)


@pytest.fixture
def operator(operator_process: Operator, request: pytest.FixtureRequest) -> Iterator[Operator]:
    """The module's operator; prints what it logged during the test when the test fails."""
    start = operator_process.log_size()
    yield operator_process
    reports = request.node.stash.get(_REPORTS, {})
    if any(report.failed for report in reports.values()):
        print(f"--- operator log during {request.node.name}:\n{operator_process.log(start)}")
    if operator_process.process is None:  # a test stopped it: leave one running for the next
        operator_process.start()


@pytest.fixture
def operator_factory(
    cluster: local.Cluster, tmp_path: pathlib.Path
) -> Iterator[Callable[..., Operator]]:
    """Makes more operator processes, each with its own log, arguments and credentials:
    `make(name, *extra_args, kubeconfig=None)` (not started). All are stopped at the end."""
    made: list[Operator] = []

    def make(name: str, *extra_args: str, kubeconfig: pathlib.Path | None = None) -> Operator:
        running = Operator(
            cluster=cluster,
            log_path=tmp_path / f"{name}.log",
            kubeconfig=kubeconfig,
            extra_args=extra_args,
        )
        made.append(running)
        return running

    yield make
    for running in made:
        running.stop()


@pytest.fixture
def namespace(cluster: local.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (in the background) afterwards."""
    # Readable, and unique per test id (parametrized tests share a prefix): a short digest of
    # the whole id follows the test name's first words.
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:6]
    readable = request.node.name.lower().replace("_", "-")[5:36].strip("-[]")
    name = f"op-{readable}-{digest}"
    cluster.kubectl("create", "namespace", name)
    yield name
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.kubectl("delete", "namespace", name, "--wait=false")


@contextlib.contextmanager
def chart_prometheus(
    directory: pathlib.Path, operator: Operator | None = None
) -> Iterator[prometheus.Prometheus]:
    """A Prometheus evaluating the chart's rules, scraping `operator` (a running process, if
    given); the caller adds the engine pods as they come (`scrape_pods`), and a restarted
    operator's new port or the operator pods' addresses (`scrape_operator`)."""
    try:
        helm, binary = tools.ensure("helm"), tools.ensure("prometheus")
    except tools.ToolError as error:
        pytest.fail(str(error), pytrace=False)
    server = prometheus.Prometheus(binary, directory, prometheus.Monitoring.of_chart(helm))
    server.start()
    if operator is not None:
        server.scrape_operator(f"127.0.0.1:{operator.metrics_port}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def alerts(operator: Operator, tmp_path: pathlib.Path) -> Iterator[prometheus.Prometheus]:
    """`chart_prometheus` scraping the module's operator, for one test."""
    with chart_prometheus(tmp_path / "prometheus", operator) as server:
        yield server


@pytest.fixture(scope="session")
def model_cache() -> pathlib.Path:
    """The tiny model's Hugging Face cache on this host (built when missing), given to engine
    containers as a read-only hostPath volume, as `spec.model.cache` gives a model to vLLM."""
    try:
        engine_env.ensure()
    except engine_env.EngineEnvError as exc:
        pytest.fail(f"the tiny model cannot be built: {exc}", pytrace=False)
    return engine_env.hf_home()
