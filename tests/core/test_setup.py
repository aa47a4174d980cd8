import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.tenants.models import Product
from apps.workflows.models import Workflow
from tests.conftest import client_for

ROOT = Path(__file__).resolve().parent.parent.parent


def _preflight(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "apps.core.preflight", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def test_preflight_names_an_unreachable_postgresql_without_a_traceback():
    result = _preflight(DATABASE_URL="postgres://postgres@127.0.0.1:1/rowbell")
    assert result.returncode == 1
    assert "PostgreSQL is not reachable at 127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr


def test_preflight_names_an_unreachable_redis_without_a_traceback():
    result = _preflight("--test", TEST_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "Redis is not reachable at redis://127.0.0.1:1/0" in result.stderr and "Traceback" not in result.stderr


def test_preflight_passes_when_both_answer():
    assert _preflight("--test").returncode == 0


def _keys(path: Path) -> dict:
    return dict(
        line.removeprefix("export ").split("=", 1)
        for line in path.read_text().splitlines()
        if line.startswith("export ")
    )


@pytest.mark.django_db
def test_seed_demo_seeds_once_and_reissues_keys_when_the_file_is_gone(tmp_path, monkeypatch):
    from apps.dashboard.management.commands import seed_demo

    monkeypatch.setattr(seed_demo, "KEYS_FILE", tmp_path / "demo.env")
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "http://127.0.0.1:8000/admin/" in out.getvalue() and "/api/docs/" in out.getvalue()
    keys = _keys(tmp_path / "demo.env")
    assert Workflow.objects.get(key="order-shipped").published_version is not None
    assert client_for(keys["ROWBELL_PRODUCT_KEY"]).get("/api/v1/workflows/order-shipped").status_code == 200
    # Something waits in the review queue once the worker has run it, and each staff group has a login.
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    from apps.runs.models import TriggerRequest

    # django-axes watches every sign-in, so authentication is asked with the login's request.
    login = RequestFactory().post("/admin/login/")
    assert TriggerRequest.objects.get(workflow_version__workflow__key="welcome").workflow_version.workflow.sandbox
    assert authenticate(login, username="reviewer", password="reviewer").has_perm("deliveries.review_delivery")
    viewer = authenticate(login, username="viewer", password="viewer")
    assert viewer.has_perm("deliveries.view_delivery") and not viewer.has_perm("deliveries.review_delivery")

    call_command("seed_demo", stdout=StringIO())
    assert Product.objects.filter(name="Demo Shop").count() == 1
    assert _keys(tmp_path / "demo.env") == keys

    (tmp_path / "demo.env").unlink()
    call_command("seed_demo", stdout=StringIO())
    fresh = _keys(tmp_path / "demo.env")
    assert Product.objects.filter(name="Demo Shop").count() == 1
    assert client_for(fresh["ROWBELL_PRODUCT_KEY"]).get("/api/v1/workflows/order-shipped").status_code == 200
    assert client_for(keys["ROWBELL_PRODUCT_KEY"]).get("/api/v1/workflows/order-shipped").status_code == 401


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=StringIO())
    assert "No changes detected" in out.getvalue()
