"""docker-compose.yml (+ deploy/compose.train.yml, the trainer job) and deploy/Dockerfile, checked statically (there is
no Docker engine here): the files parse, every service of our image runs a real `emotion-monitor` subcommand with
options the CLI accepts, every EM_* env var is a real settings field, ports, URLs and topic names agree with the
settings' defaults, and a plain `docker compose up` needs no variable while the trainer job refuses to run without
GOEMOTIONS_DIR, saying so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from emotion_monitor.cli import SUBCOMMANDS, main
from emotion_monitor.config_table import env_var_names, settings_classes

ROOT = Path(__file__).resolve().parents[2]
OUR_IMAGE = re.compile(r"^emotion-monitor(:|$)")


TRAIN_FILE = ROOT / "deploy" / "compose.train.yml"


class MissingVariable(ValueError):
    """What compose reports for ${VAR:?message} with VAR unset or empty (it then runs nothing)."""


def _interpolate(value, env: dict[str, str] | None = None):
    """Compose's ${VAR:-default} and ${VAR:?message} against ``env`` (default: nothing set, what a user gets without
    exporting anything), and $$ -> $. Any other form fails the test: it would be an unchecked variable."""
    env = env or {}

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if operator == ":-":
            return env.get(name) or argument
        if not env.get(name):
            raise MissingVariable(f"required variable {name} is missing a value: {argument}")
        return env[name]

    if isinstance(value, str):
        value = re.sub(r"(?<!\$)\$\{(\w+)(:-|:\?)([^}]*)\}", substitute, value)
        assert not re.search(r"(?<!\$)\$\{", value), f"an interpolation without a default: {value!r}"
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    return value


def _load(path: Path, env: dict[str, str] | None = None) -> dict:
    return _interpolate(yaml.safe_load(path.read_text()), env)  # safe_load also resolves the <<: merge keys


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker-compose.yml alone with no variable set: what `docker compose up` reads; interpolating it must not fail."""
    return _load(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def with_trainer(compose) -> dict:
    """`-f docker-compose.yml -f deploy/compose.train.yml` with GOEMOTIONS_DIR set (compose merges services by name)."""
    train = _load(TRAIN_FILE, {"GOEMOTIONS_DIR": "/srv/goemotions"})
    assert not set(train["services"]) & set(compose["services"])  # it adds the trainer, overrides nothing
    return {**compose, "services": {**compose["services"], **train["services"]},
            "volumes": {**compose["volumes"], **(train.get("volumes") or {})}}


@pytest.fixture(scope="module")
def settings_by_prefix() -> dict:
    return {cls.model_config["env_prefix"]: cls for _, _, cls in settings_classes()}


def _ours(compose: dict) -> dict:
    return {name: svc for name, svc in compose["services"].items() if OUR_IMAGE.match(svc.get("image", ""))}


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_services_roles_and_profiles(compose, with_trainer):
    assert "trainer" not in compose["services"]
    services = with_trainer["services"]
    assert {"kafka", "topics", "redis", "worker", "dashboard", "trainer", "worker-gpu"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")  # the official image
    kafka_env = _env(services["kafka"])
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"] and "zookeeper" not in str(services).lower()  # KRaft
    assert re.match(r"^redis:8|^redis/redis-stack-server", services["redis"]["image"])  # TimeSeries built in
    assert services["trainer"]["profiles"] == ["train"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "profiles" not in services["worker"] and "profiles" not in services["dashboard"]


def test_every_app_command_is_a_real_subcommand_the_cli_accepts(with_trainer):
    ours = _ours(with_trainer)
    assert {"worker", "worker-gpu", "dashboard", "trainer"} <= set(ours)
    for name, service in ours.items():
        command = service["command"]
        assert command[0] in SUBCOMMANDS, f"{name}: {command[0]!r} is not an emotion-monitor subcommand"
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: `emotion-monitor {' '.join(command)}` rejected:\n{result.output}"
        assert f"Usage: main {command[0]}" in result.output or f"{command[0]} [OPTIONS]" in result.output


def test_every_env_var_is_a_settings_field(with_trainer, settings_by_prefix):
    compose = with_trainer
    known = {name for cls in settings_by_prefix.values() for name in env_var_names(cls).values()}
    used = 0
    for name, service in compose["services"].items():
        for key in _env(service):
            if key.startswith("EM_"):
                used += 1
                assert key in known, f"{name}: {key} is not a settings env var (see docs/configuration.md)"
    assert used >= 15
    # and every value parses into its settings class (types, ranges)
    for name, service in _ours(compose).items():
        env = _env(service)
        for prefix, cls in settings_by_prefix.items():
            values = {key[len(prefix):].lower(): value for key, value in env.items() if key.startswith(prefix)}
            if values:
                cls.model_validate(values)


def test_ports_urls_and_topics_match_the_settings(compose):
    from dashboard.settings import DashboardSettings
    from monitor.settings import MonitorSettings

    services = compose["services"]
    monitor_defaults, dashboard_defaults = MonitorSettings(), DashboardSettings()
    for name in ("worker", "worker-gpu"):
        env = _env(services[name])
        metrics = int(env["EM_MONITOR_METRICS_PORT"])
        assert metrics == monitor_defaults.metrics_port
        # loopback by default; inside a container other containers (Prometheus) must reach it
        assert monitor_defaults.metrics_host == "127.0.0.1" and env["EM_MONITOR_METRICS_HOST"] == "0.0.0.0"
        assert services[name]["expose"] == [str(metrics)]
        assert "ports" not in services[name] and "container_name" not in services[name]  # --scale worker=N works
        assert env["EM_MONITOR_BROKER_URL"] == "kafka://kafka:9092"
        assert env["EM_MONITOR_REDIS_URL"] == "redis://redis:6379/0"
    assert str(metrics) in " ".join(services["worker"]["healthcheck"]["test"])
    assert "PLAINTEXT://kafka:9092" in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]

    dash_env = _env(services["dashboard"])
    port = int(dash_env["EM_DASHBOARD_PORT"])
    assert port == dashboard_defaults.port
    assert services["dashboard"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f":{port}/_stcore/health" in " ".join(services["dashboard"]["healthcheck"]["test"])
    assert dash_env["EM_DASHBOARD_REDIS_URL"] == "redis://redis:6379/0"

    # the topic step creates the worker's topics, the posts topic with the workers' partition count
    script = services["topics"]["command"][0]
    partitions = _env(services["worker"])["EM_MONITOR_TOPIC_PARTITIONS"]
    for topic, count in ((monitor_defaults.posts_topic, partitions), (monitor_defaults.classified_topic, partitions),
                         (monitor_defaults.dlq_topic, "1"), (monitor_defaults.alerts_topic, "1")):
        assert f'"{topic}:{count}"' in script
    assert int(partitions) >= 4
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_trainer_job_reads_the_data_it_mounts(with_trainer):
    from trainer.settings import TrainerSettings

    compose = with_trainer
    trainer = compose["services"]["trainer"]
    env = _env(trainer)
    TrainerSettings.model_validate({key[len("EM_TRAIN_"):].lower(): value for key, value in env.items()})
    mounts = {volume.split(":")[1] for volume in trainer["volumes"]}
    assert env["EM_TRAIN_DATA"] in mounts
    assert f"/srv/goemotions:{env['EM_TRAIN_DATA']}:ro" in trainer["volumes"]  # GOEMOTIONS_DIR, nothing else
    # the same image and build as every other role of ours
    assert (trainer["image"], trainer["build"]) == (compose["services"]["worker"]["image"],
                                                    compose["services"]["worker"]["build"])
    assert env["EM_TRAIN_OUTPUT"].startswith("/models/") and "/models" in mounts
    for worker in ("worker", "worker-gpu"):  # both workers can serve the model the trainer job writes
        assert "models:/models:ro" in compose["services"][worker]["volumes"]
    declared = set(compose["volumes"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in declared


def test_trainer_job_refuses_to_run_without_goemotions_dir():
    """Unset or empty, compose stops with the file's message; no silent default path (../shared exists only on the
    development machines, and a missing bind source would be created empty)."""
    for env in ({}, {"GOEMOTIONS_DIR": ""}):
        with pytest.raises(MissingVariable, match="GOEMOTIONS_DIR.*set GOEMOTIONS_DIR to the GoEmotions folder"):
            _load(TRAIN_FILE, env)
    assert "GOEMOTIONS_DIR" not in (ROOT / "docker-compose.yml").read_text().split("name: emotion-monitor", 1)[1]


def test_dockerfile_builds_the_packages_the_project_declares():
    import tomllib

    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, re.M))
    packages = {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    for path in copied:
        assert (ROOT / path).exists()
    assert 'ENTRYPOINT ["emotion-monitor"]' in dockerfile
    assert project["project"]["scripts"]["emotion-monitor"] == "emotion_monitor.cli:main"
    torch_version = re.search(r"ARG TORCH_VERSION=(\S+)", dockerfile).group(1)
    torch_pin = next(dep for dep in project["project"]["dependencies"] if dep.startswith("torch"))
    from packaging.requirements import Requirement

    assert Requirement(torch_pin).specifier.contains(torch_version), f"{torch_version} violates {torch_pin}"
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()
    assert all(f"!{package}/**" in ignore for package in packages)
