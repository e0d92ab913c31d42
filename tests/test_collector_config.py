"""``otel-collector.yaml``, statically: no collector binary can be fetched
where this is developed and tested, so what a collector would refuse at
start-up (a component used but not defined, a pipeline without receivers or
exporters) and what the issue asks of it are checked here instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("receivers", "processors", "exporters", "extensions", "connectors")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "otel-collector.yaml").read_text())
    return loaded


def kind(component_id: str) -> str:
    """``otlp/jaeger`` is an ``otlp`` component named ``jaeger``."""
    return component_id.split("/", 1)[0]


def test_every_component_used_is_defined_and_every_one_defined_is_used(
    config: dict[str, Any],
) -> None:
    service = config["service"]
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    used["extensions"] |= set(service.get("extensions", []))
    for name, pipeline in service["pipelines"].items():
        assert kind(name) in ("traces", "metrics", "logs"), name
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for section in ("receivers", "processors", "exporters"):
            used[section] |= set(pipeline.get(section, []))
    for section in SECTIONS:
        assert used[section] == set(config.get(section) or {}), section


def test_otlp_in_on_both_protocols_and_the_ports_compose_publishes(
    config: dict[str, Any],
) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")
    assert config["exporters"]["prometheus"]["endpoint"].endswith(":8889")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    collector = compose["services"]["otel-collector"]
    assert "contrib" in collector["image"]  # the prometheus exporter is not in the core build
    # Published on loopback only: the collector asks nobody who they are.
    published = {tuple(port.split(":")[:2]) for port in collector["ports"]}
    assert {("127.0.0.1", "8889"), ("127.0.0.1", "13133")} <= published
    assert any(v.startswith("./otel-collector.yaml:") for v in collector["volumes"])


def test_traces_go_to_jaeger_and_metrics_to_prometheus_behind_limiter_and_batch(
    config: dict[str, Any],
) -> None:
    pipelines = config["service"]["pipelines"]
    for name in ("traces", "metrics"):
        # The memory limiter must come first to refuse data before it piles up.
        assert pipelines[name]["processors"] == ["memory_limiter", "batch"]
        assert pipelines[name]["receivers"] == ["otlp"]
    [traces_out] = pipelines["traces"]["exporters"]
    assert kind(traces_out) == "otlp"
    assert config["exporters"][traces_out]["endpoint"] == "jaeger:4317"
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] and 0 < limiter["limit_percentage"] <= 90
