"""The deployment recipes of deploy/: the Kubernetes manifest is valid against Kubernetes'
own schemas (bundled by ``kubernetes-validate``: no network) and its numbers are the ones
``checkshutdown --budget`` asks of the example project; the nginx and HAProxy
configurations, filled in, are accepted by the balancers themselves (the rolling restarts
behind them are tests/test_balancers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .balancers import DEPLOY, NGINX_MAIN, fill, missing, program
from .servers import ROOT, example_env

MANIFEST = DEPLOY / "kubernetes.yaml"
#: How long Kubernetes takes to take a pod that failed its readiness out of the endpoints
#: that kube-proxy and the ingress route to (the manifest's comment says the same).
ENDPOINT_DELAY = 2


def manifest() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def container() -> dict[str, Any]:
    (deployment,) = [doc for doc in manifest() if doc["kind"] == "Deployment"]
    (web,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(web)


def flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` arguments of a command line, by name."""
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def test_the_manifest_is_valid_kubernetes() -> None:
    docs = manifest()
    assert {doc["kind"] for doc in docs} == {"Deployment", "Service"}
    version = kubernetes_validate.latest_version()
    for doc in docs:  # strict: a misspelt field (readynessProbe) is an error too
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misspelt_field() -> None:
    (deployment,) = [doc for doc in manifest() if doc["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readynessProbe"):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_the_probes_are_django_graceful_s() -> None:
    web = container()
    assert web["readinessProbe"]["httpGet"]["path"] == "/health/ready/"
    assert web["livenessProbe"]["httpGet"]["path"] == "/health/live/"
    # DRAIN_DELAY does what a preStop sleep would, with readiness failing meanwhile.
    assert "lifecycle" not in web


def budget(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    """``manage.py checkshutdown --budget --json`` of the example project in ``env``."""
    done = subprocess.run(
        [sys.executable, "manage.py", "checkshutdown", "--budget", "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def budget_for_probe(
    env: dict[str, str], probe: dict[str, Any], *more: str
) -> tuple[int, dict[str, Any]]:
    """``checkshutdown --budget --json`` against a manifest's readiness probe."""
    period, threshold = str(probe["periodSeconds"]), str(probe["failureThreshold"])
    return budget(env, "--readiness-period", period, "--failure-threshold", threshold, *more)


def test_the_manifest_s_numbers_cover_the_example_project_s_budget(tmp_path: Path) -> None:
    """What a deploy pipeline checks: the manifest's environment, its readiness probe and
    its timeouts against ``checkshutdown --budget`` of the code it runs."""
    (deployment,) = [doc for doc in manifest() if doc["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    web = container()
    env = {**example_env(tmp_path), **{v["name"]: v["value"] for v in web["env"]}}
    status, report = budget_for_probe(
        env, web["readinessProbe"], "--endpoint-delay", str(ENDPOINT_DELAY)
    )
    assert status == 0 and report["drain"]["enough"], report["drain"]
    least = report["least"]
    assert pod["terminationGracePeriodSeconds"] >= least["terminationGracePeriodSeconds"]
    given = flags(web["command"])
    needed = dict(zip(least["gunicorn"][::2], least["gunicorn"][1::2], strict=True))
    assert float(given["graceful-timeout"]) >= float(needed["--graceful-timeout"]), report
    assert float(given["timeout"]) >= float(needed["--timeout"]), report
    # The kubelet's SIGKILL comes after Gunicorn's own: Gunicorn's is the one that acts.
    assert pod["terminationGracePeriodSeconds"] > float(given["graceful-timeout"])


def test_the_example_project_s_defaults_would_not_do() -> None:
    """Without the manifest's DRAIN_DELAY (the example project's default is 0) the same
    probe fails the check: the numbers above are not met by chance."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.pop("GRACEFUL_DRAIN_DELAY", None)
    status, report = budget_for_probe(env, container()["readinessProbe"])
    assert status == 1 and not report["drain"]["enough"], report["drain"]


ADDRESSES = {"LISTEN": "127.0.0.1:8080", "BACKEND_1": "127.0.0.1:8001"}


@pytest.mark.parametrize("backend_2", ["127.0.0.1:8002", "/run/myproject/web2.sock"])
def test_nginx_accepts_its_recipe(tmp_path: Path, backend_2: str) -> None:
    if reason := missing("nginx"):
        pytest.skip(reason)
    unix = backend_2.startswith("/")
    values = {**ADDRESSES, "BACKEND_2": f"unix:{backend_2}" if unix else backend_2}
    (tmp_path / "django.conf").write_text(fill((DEPLOY / "nginx.conf").read_text(), values))
    (tmp_path / "nginx.conf").write_text(NGINX_MAIN.format(dir=tmp_path, user=""))
    exe = program("nginx")
    assert exe is not None
    cmd = [exe, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    done = subprocess.run(
        [*cmd, "-e", str(tmp_path / "error.log")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("backend_2", ["127.0.0.1:8002", "/run/myproject/web2.sock"])
def test_haproxy_accepts_its_recipe(backend_2: str) -> None:
    if reason := missing("haproxy"):
        pytest.skip(reason)
    exe = program("haproxy")
    assert exe is not None
    env = {**os.environ, **ADDRESSES, "BACKEND_2": backend_2}
    env.update(CHECK_INTERVAL="2s", CHECK_FALL="3")
    done = subprocess.run(
        [exe, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
