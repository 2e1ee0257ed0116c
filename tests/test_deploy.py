"""The deployment files in ``deploy/``: systemd units, the container image and the
Helm chart, checked without a machine, a registry or a cluster to run them on.

Every command line they start is parsed by the real CLI, so that they cannot drift
from it; every Kubernetes manifest the chart renders is validated against the
Kubernetes schemas.
"""

from __future__ import annotations

import configparser
import fnmatch
import re
import shlex
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import click
import helm_python
import kubernetes_validate
import pytest
import yaml

import dragonpy
from dragonpy._config import DaemonSettings, SchedulerSettings
from dragonpy_cli._app import cli
from dragonpy_cli._common import parse_size
from dragonpy_cli._containerd import _server_of
from dragonpy_cli._daemon import daemon
from dragonpy_cli._scheduler import scheduler
from dragonpy_cli._settings import LiveSettings

DEPLOY = Path(__file__).parents[1] / "deploy"
SYSTEMD = DEPLOY / "systemd"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
CHART = DEPLOY / "helm" / "dragonpy"

UNITS = [
    "dragonpy-daemon.service",
    "dragonpy-seed.service",
    "dragonpy-scheduler.service",
]


def parse_command(argv: Sequence[str]) -> click.Context:
    """Parse a command line as the installed CLI would, without running it: an
    option it does not know, or a value it refuses, raises ``click.UsageError``."""
    program, *args = argv
    name = PurePosixPath(program).name
    if name == "dragonpy-daemon":
        return daemon.make_context(name, args)
    assert name == "dragonpy", f"{program} is not a dragonpy command"
    command, *rest = args
    found = cli.get_command(click.Context(cli), command)
    assert found is not None, f"dragonpy has no command {command!r}"
    return found.make_context(f"dragonpy {command}", rest)


def default_of(command: click.Command, name: str) -> Any:
    (param,) = (param for param in command.params if param.name == name)
    return param.default


def installed_tool(name: str) -> str | None:
    """A tool installed with the test dependencies (beside this interpreter's
    scripts), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / name
    return str(beside) if beside.exists() else shutil.which(name)


# systemd units


class UnitFile(configparser.ConfigParser):
    """A systemd unit or environment file: keys are case-sensitive, and ``%`` is a
    specifier, not interpolation."""

    def __init__(self) -> None:
        super().__init__(interpolation=None, delimiters=("=",), strict=True)

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def read_unit(name: str) -> UnitFile:
    unit = UnitFile()
    unit.read(SYSTEMD / name)
    return unit


def read_environment_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines with shell-like quotes, as systemd reads them."""
    variables = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            variables[key.strip()] = " ".join(shlex.split(value))
    return variables


def exec_start_argv(unit: UnitFile, environment: Mapping[str, str]) -> list[str]:
    """The argv systemd runs: ``%S`` is /var/lib, ``$NAME`` expands to one word
    per whitespace-separated part of its value, ``${NAME}`` to a single word."""
    argv = []
    for word in shlex.split(unit["Service"]["ExecStart"]):
        if word.startswith("${") and word.endswith("}"):
            argv.append(environment.get(word[2:-1], ""))
        elif word.startswith("$"):
            argv.extend(environment.get(word[1:], "").split())
        else:
            argv.append(word.replace("%S", "/var/lib"))
    return argv


def shipped(installed: str) -> Path:
    """The file in deploy/systemd that is installed as ``/etc/dragonpy/NAME``."""
    path = PurePosixPath(installed)
    assert path.parent == PurePosixPath("/etc/dragonpy")
    return SYSTEMD / path.name


@pytest.mark.parametrize("name", UNITS)
def test_each_unit_starts_with_settings_the_cli_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit = read_unit(name)
    environment_file = unit["Service"]["EnvironmentFile"].removeprefix("-")
    environment = read_environment_file(shipped(environment_file))
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    argv = exec_start_argv(unit, environment)
    config = argv.index("--config") + 1
    argv[config] = str(shipped(argv[config]))

    context = parse_command(argv)
    # What the service builds its settings from: the file, the variables, the
    # options; a mistake in any of them is an error naming it.
    kind = SchedulerSettings if context.command is scheduler else DaemonSettings
    settings: Any = LiveSettings(kind, context).current

    assert settings.log.level == "info"
    if kind is DaemonSettings:
        peer = settings.daemon_config()
        # The store is the unit's state directory: %S/<StateDirectory>.
        assert str(peer.store_dir) == "/var/lib/" + unit["Service"]["StateDirectory"]
        assert peer.seed is (name == "dragonpy-seed.service")
        assert peer.ip == environment["DRAGONPY_HOST_IP"]
        assert peer.scheduler == "scheduler.example.internal:8002"


@pytest.mark.parametrize("name", UNITS)
def test_each_unit_is_hardened(name: str) -> None:
    service = read_unit(name)["Service"]

    assert service["Restart"] == "on-failure"
    assert int(service["LimitNOFILE"]) >= 65536
    assert service.get("DynamicUser") == "yes" or service["User"] == "dragonpy"
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert set(service["RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }


def test_units_share_one_set_of_hardening_options() -> None:
    # The units are self-contained (prefix drop-ins need systemd 246 or later), so
    # this is where their copies are kept equal.
    own = {"Type", "EnvironmentFile", "ExecStart", "User", "Group", "DynamicUser"}
    own |= {"StateDirectory", "StateDirectoryMode", "UMask"}

    options = [
        {key: value for key, value in read_unit(name)["Service"].items()}
        for name in UNITS
    ]

    shared = [{k: v for k, v in each.items() if k not in own} for each in options]
    assert shared[0] == shared[1] == shared[2]


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # systemd checks that each command exists: point the units at this
    # environment's scripts instead of /opt/dragonpy/bin.
    scripts = sysconfig.get_path("scripts")
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/dragonpy/bin", scripts))

    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )

    # Unknown or misspelled options are only warnings ("ignoring"): none at all.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# The container image


def containerfile_stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, continuation lines joined, comments and
    parser directives dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, argument = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), argument.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [argument for instruction, argument in stage if instruction == name]


def test_the_image_lints_clean() -> None:
    hadolint = installed_tool("hadolint")
    assert hadolint is not None, "hadolint comes with the test dependencies"

    result = subprocess.run(
        [hadolint, "--no-color", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_builds_the_compiled_wheel_and_ships_no_compiler() -> None:
    build, runtime = containerfile_stages()

    assert instructions(build, "FROM") == ["python:3.11-slim-bookworm AS build"]
    assert instructions(runtime, "FROM") == ["python:3.11-slim-bookworm"]
    # DRAGONPY_PURE would build the pure-Python wheel instead.
    assert not any("DRAGONPY_PURE" in argument for _, argument in build)
    assert any("pip wheel" in run for run in instructions(build, "RUN"))
    assert any("gcc" in run for run in instructions(build, "RUN"))
    assert not any("gcc" in run for run in instructions(runtime, "RUN"))
    assert instructions(runtime, "COPY") == ["--from=build /opt/dragonpy /opt/dragonpy"]


def test_the_image_runs_as_its_own_user() -> None:
    _, runtime = containerfile_stages()

    (user,) = instructions(runtime, "USER")
    uid, _, gid = user.partition(":")
    assert uid == gid == "10001"
    assert any("--uid 10001" in run for run in instructions(runtime, "RUN"))


def test_the_image_exposes_the_ports_of_the_cli() -> None:
    _, runtime = containerfile_stages()
    ports = {
        default_of(command, param.name)
        for command in (daemon, scheduler)
        for param in command.params
        if param.name == "port" or (param.name or "").endswith("_port")
    }

    (exposed,) = instructions(runtime, "EXPOSE")

    assert {int(port) for port in exposed.split()} == ports


def test_the_image_checks_the_health_port_and_starts_the_daemon() -> None:
    _, runtime = containerfile_stages()
    health = f"http://127.0.0.1:{default_of(daemon, 'health_port')}/healthy"

    (environment,) = instructions(runtime, "ENV")
    (healthcheck,) = instructions(runtime, "HEALTHCHECK")
    (command,) = instructions(runtime, "CMD")

    assert f"DRAGONPY_HEALTH_URL={health}" in environment.split()
    assert "DRAGONPY_STORE=/var/lib/dragonpy" in environment.split()
    assert "DRAGONPY_HEALTH_URL" in healthcheck
    parse_command(yaml.safe_load(command))


def docker_ignores(path: str, patterns: list[str]) -> bool:
    """Whether a build context leaves ``path`` out: the last pattern that matches
    it or one of its parent directories decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    ignored = False
    for pattern in patterns:
        include = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(each, pattern) for each in candidates):
            ignored = not include
    return ignored


def test_the_build_context_holds_what_the_build_copies_and_little_else() -> None:
    root = DEPLOY.parent
    lines = (root / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and line[0] != "#"]
    build, _ = containerfile_stages()
    copied = [
        source for copy in instructions(build, "COPY") for source in copy.split()[:-1]
    ]
    sources = [
        str(path.relative_to(root))
        for source in copied
        for path in [root / source, *(root / source).rglob("*.py")]
    ]

    assert [path for path in sources if docker_ignores(path, patterns)] == []
    assert docker_ignores("src/dragonpy/__pycache__/_pieces.cpython-311.pyc", patterns)
    for elsewhere in ["tests/test_deploy.py", ".git/HEAD", ".nox/x", "benchmarks/a"]:
        assert docker_ignores(elsewhere, patterns)


# The Helm chart

NAMESPACE = "p2p"
RELEASE = "dp"
FULLNAME = f"{RELEASE}-dragonpy"
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "three seeds on fast disks": {
        "seed": {
            "replicas": 3,
            "storeCapacity": "400GiB",
            "persistence": {"size": "500Gi", "storageClassName": "fast-ssd"},
        },
    },
    "monitored": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}
        },
    },
    "with redis": {"redis": {"enabled": True}},
    "several registries": {
        "registries": [
            "docker.io",
            "ghcr.io",
            "registry.example:5000",
            "http://registry.local:5000",
        ],
        "containerd": {"writeDefault": True, "hostsDir": "/etc/containerd/registries"},
        "daemon": {
            "allowAnyRegistry": True,
            "prefetch": True,
            "ports": {
                "piece": 14000,
                "proxy": 14001,
                "metrics": 14002,
                "health": 14003,
            },
            "extraArgs": ["--upload-rate", "200MB", "--concurrency", "16"],
            "config": {"proxy": {"stallTimeout": "20s"}, "log": {"format": "json"}},
        },
        "seed": {
            "extraArgs": ["--origin-concurrency", "8"],
            "config": {"download": {"pieceTimeout": "10s"}},
        },
        "scheduler": {
            "extraArgs": ["--parent-limit", "16"],
            "config": {"gc": {"hostTTL": "30s"}},
        },
    },
    "sized and placed": {
        "image": {"repository": "registry.example:5000/dragonpy", "tag": "0.1.0-rc1"},
        "imagePullSecrets": [{"name": "pull"}],
        "daemon": {
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "2", "memory": "2Gi"},
            },
            "priorityClassName": "system-node-critical",
            "tolerations": [{"operator": "Exists"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
        },
        "scheduler": {
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "node-role.kubernetes.io/control-plane",
                                        "operator": "DoesNotExist",
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
        },
    },
    "no seeds, containerd left alone": {
        "seed": {"enabled": False},
        "containerd": {"enabled": False},
    },
}
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.25", kubernetes_validate.utils.latest_version()]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


def only(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = (
        each
        for each in manifests
        if each["kind"] == kind and each["metadata"]["name"] == f"{FULLNAME}-{name}"
    )
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container_argv(container: dict[str, Any]) -> list[str]:
    """``command`` and ``args`` as the kubelet runs them: ``$(NAME)`` replaced by
    the container's variables, which come from the downward API here."""
    sample = {"NODE_IP": "192.0.2.7", "NODE_NAME": "node-7", "POD_IP": "10.1.2.3"}
    env = container.get("env", [])
    variables = {each["name"]: sample[each["name"]] for each in env}
    return [
        re.sub(r"\$\((\w+)\)", lambda match: variables[match[1]], str(word))
        for word in container["command"] + container.get("args", [])
    ]


def flag(argv: list[str], name: str) -> list[str]:
    return [argv[index + 1] for index, word in enumerate(argv) if word == name]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_matches_the_kubernetes_schemas(
    chart: helm_python.Chart, scenario: str, version: str
) -> None:
    manifests = render(chart, SCENARIOS[scenario])

    kinds = set()
    for manifest in manifests:
        kinds.add(manifest["kind"])
        if manifest["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD, checked on its own below
        kubernetes_validate.validate(manifest, version, strict=True)

    assert {"DaemonSet", "Deployment", "Service"} <= kinds


def test_the_chart_lints_clean(chart: helm_python.Chart) -> None:
    for values in SCENARIOS.values():
        report = helm_python.lint(CHART, values, strict=True)

        assert report["errors"] == []
        # Severity 1 is information (a missing icon, say); 2 and 3 are problems.
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_chart_deploys_the_package_version() -> None:
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())

    assert metadata["appVersion"] == dragonpy.__version__
    assert metadata["kubeVersion"] == f">={KUBERNETES_VERSIONS[0]}.0-0"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_dragonpy_command_line_is_accepted_by_the_cli(
    chart: helm_python.Chart, scenario: str, tmp_path: Path
) -> None:
    image = SCENARIOS[scenario].get("image", {}).get("repository", "dragonpy")
    manifests = render(chart, SCENARIOS[scenario])
    (config_map,) = (m for m in manifests if m["kind"] == "ConfigMap")
    for file, text in config_map["data"].items():
        (tmp_path / file).write_text(text)
    workloads = [
        manifest
        for manifest in manifests
        if manifest["kind"] in ("DaemonSet", "Deployment", "StatefulSet")
    ]

    services = 0
    for workload in workloads:
        spec = pod_spec(workload)
        for container in spec["containers"] + spec.get("initContainers", []):
            if not container["image"].startswith(f"{image}:"):
                continue
            if container["command"] == ["chown", "10001:10001", "/var/lib/dragonpy"]:
                continue  # the store's owner: not a dragonpy command
            argv = container_argv(container)
            if "--config" not in argv:
                parse_command(argv)  # dragonpy containerd-config
                continue
            # The service's settings: its file from the ConfigMap, then its options.
            config = argv.index("--config") + 1
            argv[config] = str(tmp_path / PurePosixPath(argv[config]).name)
            context = parse_command(argv)
            kind = SchedulerSettings if context.command is scheduler else DaemonSettings
            LiveSettings(kind, context)
            services += 1

    assert services >= 2


@pytest.mark.parametrize("scenario", ["defaults", "several registries"])
def test_daemons_run_on_the_node_network_and_configure_its_containerd(
    chart: helm_python.Chart, scenario: str
) -> None:
    values = SCENARIOS[scenario]
    registries = values.get("registries", ["docker.io"])
    spec = pod_spec(only(render(chart, values), "DaemonSet", "daemon"))
    (daemon_container,) = spec["containers"]
    (init,) = (each for each in spec["initContainers"] if each["name"] != "store-owner")

    hosts = parse_command(container_argv(init)).params
    argv = container_argv(daemon_container)
    ports = parse_command(argv).params

    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    # containerd on the node reaches the daemon's mirror on loopback.
    assert hosts["mirror"] == f"http://127.0.0.1:{ports['proxy_port']}"
    assert list(hosts["registries"]) == registries
    (mount,) = init["volumeMounts"]
    (volume,) = (each for each in spec["volumes"] if each["name"] == mount["name"])
    assert str(hosts["hosts_dir"]) == mount["mountPath"] == volume["hostPath"]["path"]
    assert ports["ip"] == "192.0.2.7"  # the node's address, for other peers
    # The daemon serves exactly the upstreams containerd will name to it.
    assert flag(argv, "--registry") == [_server_of(each)[1] for each in registries]
    assert hosts["with_default"] is values.get("containerd", {}).get(
        "writeDefault", False
    )


def test_without_containerd_the_nodes_are_left_alone(chart: helm_python.Chart) -> None:
    values = SCENARIOS["no seeds, containerd left alone"]
    manifests = render(chart, values)
    spec = pod_spec(only(manifests, "DaemonSet", "daemon"))

    assert [each["name"] for each in spec["initContainers"]] == ["store-owner"]
    assert "containerd-hosts" not in [each["name"] for each in spec["volumes"]]
    assert "StatefulSet" not in {manifest["kind"] for manifest in manifests}


@pytest.mark.parametrize("scenario", ["defaults", "several registries"])
def test_probes_ask_the_health_port_for_healthy(
    chart: helm_python.Chart, scenario: str
) -> None:
    manifests = render(chart, SCENARIOS[scenario])
    peers = [
        only(manifests, "DaemonSet", "daemon"),
        only(manifests, "StatefulSet", "seed"),
    ]

    for workload in [*peers, only(manifests, "Deployment", "scheduler")]:
        (container,) = pod_spec(workload)["containers"]
        params = parse_command(container_argv(container)).params
        port = params.get("health_port", params.get("port"))
        named = {each["name"]: each["containerPort"] for each in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            check = container[probe]["httpGet"]

            assert check["path"] == "/healthy"
            assert named[check["port"]] == port

    daemon_ports = pod_spec(peers[0])["containers"][0]["ports"]
    expected = 14003 if scenario == "several registries" else 4003
    assert {each["name"]: each["containerPort"] for each in daemon_ports}[
        "health"
    ] == expected


def test_peers_find_the_scheduler_by_its_headless_service(
    chart: helm_python.Chart,
) -> None:
    manifests = render(chart, SCENARIOS["defaults"])
    scheduler_pods = only(manifests, "Deployment", "scheduler")
    service = only(manifests, "Service", "scheduler")
    (container,) = pod_spec(scheduler_pods)["containers"]
    params = parse_command(container_argv(container)).params

    name = service["metadata"]["name"]
    address = f"{name}.{NAMESPACE}.svc.cluster.local:{params['port']}"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= (
        scheduler_pods["spec"]["template"]["metadata"]["labels"].items()
    )
    ports = {each["name"]: each["port"] for each in service["spec"]["ports"]}
    assert ports == {"http": params["port"], "metrics": params["metrics_port"]}
    assert scheduler_pods["spec"]["replicas"] == 1
    assert scheduler_pods["spec"]["strategy"] == {"type": "Recreate"}
    for peer in [("DaemonSet", "daemon"), ("StatefulSet", "seed")]:
        (container,) = pod_spec(only(manifests, *peer))["containers"]
        assert parse_command(container_argv(container)).params["scheduler"] == address


def test_seeds_keep_their_pieces_on_volumes_of_their_own(
    chart: helm_python.Chart,
) -> None:
    seeds = only(
        render(chart, SCENARIOS["three seeds on fast disks"]), "StatefulSet", "seed"
    )
    (container,) = pod_spec(seeds)["containers"]
    params = parse_command(container_argv(container)).params
    (claim,) = seeds["spec"]["volumeClaimTemplates"]

    assert seeds["spec"]["replicas"] == 3
    assert params["seed"] is True
    assert params["ip"] == "10.1.2.3"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
    (mount,) = (
        m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]
    )
    assert str(params["store_dir"]) == mount["mountPath"]
    assert parse_size(params["store_capacity"]) == 400 * 2**30


def test_pods_run_as_the_image_user_with_requested_resources(
    chart: helm_python.Chart,
) -> None:
    manifests = render(chart, SCENARIOS["sized and placed"])
    daemons = pod_spec(only(manifests, "DaemonSet", "daemon"))

    (container,) = daemons["containers"]
    assert container["image"] == "registry.example:5000/dragonpy:0.1.0-rc1"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert daemons["priorityClassName"] == "system-node-critical"
    assert daemons["tolerations"] == [{"operator": "Exists"}]
    for workload in (
        ("DaemonSet", "daemon"),
        ("StatefulSet", "seed"),
        (
            "Deployment",
            "scheduler",
        ),
    ):
        spec = pod_spec(only(manifests, *workload))
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["automountServiceAccountToken"] is False
        for each in spec["containers"]:
            assert each["securityContext"]["readOnlyRootFilesystem"] is True
            assert "requests" in each["resources"]


def test_the_service_monitor_scrapes_every_component(
    chart: helm_python.Chart,
) -> None:
    assert not any(
        m["kind"] == "ServiceMonitor" for m in render(chart, SCENARIOS["defaults"])
    )
    manifests = render(chart, SCENARIOS["monitored"])
    (monitor,) = (m for m in manifests if m["kind"] == "ServiceMonitor")
    selector = monitor["spec"]["selector"]
    (components,) = selector["matchExpressions"]

    def selected(service: dict[str, Any]) -> bool:
        labels = service["metadata"]["labels"]
        return selector["matchLabels"].items() <= labels.items() and (
            labels[components["key"]] in components["values"]
        )

    services = [m for m in manifests if m["kind"] == "Service" and selected(m)]
    assert sorted(s["metadata"]["name"] for s in services) == [
        f"{FULLNAME}-daemon",
        f"{FULLNAME}-scheduler",
        f"{FULLNAME}-seed",
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    for service in services:
        assert endpoint["port"] in [each["name"] for each in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_redis_runs_only_when_asked_for(chart: helm_python.Chart) -> None:
    def redis(values: dict[str, Any]) -> list[str]:
        return [
            m["kind"]
            for m in render(chart, values)
            if m["metadata"]["name"] == f"{FULLNAME}-redis"
        ]

    assert redis(SCENARIOS["defaults"]) == []
    assert sorted(redis(SCENARIOS["with redis"])) == ["Service", "StatefulSet"]


def test_the_notes_say_how_to_tell_p2p_is_used(chart: helm_python.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)[
        "dragonpy/templates/NOTES.txt"
    ]

    assert f"{FULLNAME}-scheduler.{NAMESPACE}.svc.cluster.local:8002" in notes
    assert "X-Dragonpy-Source" in notes
    assert "dragonpy_download_bytes_total" in notes


def value_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values a user sets: maps that hold settings are walked,
    maps and lists given whole (resources, tolerations, labels) are one value."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in WHOLE_VALUES:
            yield from value_paths(value, f"{path}.")
        else:
            yield path


# Values that are Kubernetes objects or configuration files of their own, set whole.
WHOLE_VALUES = {
    "daemon.config",
    "seed.config",
    "scheduler.config",
    "daemon.resources",
    "daemon.updateStrategy",
    "seed.resources",
    "scheduler.resources",
    "redis.resources",
    "probes.liveness",
    "probes.readiness",
    "podSecurityContext",
    "securityContext",
}


def test_every_value_is_explained_where_it_is_set() -> None:
    text = (CHART / "values.yaml").read_text()
    paths = set(value_paths(yaml.safe_load(text)))

    # Each line that sets a value follows a comment about it.
    parents: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        setting = re.match(r"^( *)([A-Za-z]\w*):", line)
        if setting:
            indent, key = len(setting[1]), setting[2]
            parents = [(i, k) for i, k in parents if i < indent]
            path = ".".join([k for _, k in parents] + [key])
            parents.append((indent, key))
            assert path not in paths or previous.startswith("#"), path
        if line.strip():
            previous = line.strip()


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()

    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))

    assert documented == set(value_paths(values))
