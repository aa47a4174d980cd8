"""Production settings as a deploy reads them: Django's deployment checklist passes with no warning."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check_deploy(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROWBELL_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            # A key as `python -c 'import secrets; print(secrets.token_urlsafe(50))'` makes one.
            "DJANGO_SECRET_KEY": "kR9wq2Jx7mVd0sLp4ZtYb8NcHf3GuEaW6oQiT1yXnKjMrPzS5vBe",
            "ROWBELL_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1kby1ub3QtdXNlLWluLXByb2Q=",
            "DJANGO_ALLOWED_HOSTS": "rowbell.example.com",
            **extra,
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deployment_checklist_with_no_warning():
    result = _check_deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_turning_the_https_redirect_off_for_a_proxy_is_reported():
    # A proxy that terminates TLS without X-Forwarded-Proto needs the redirect off; Django then says so.
    result = _check_deploy(DJANGO_SECURE_SSL_REDIRECT="false")
    assert result.returncode != 0 and "security.W008" in result.stdout + result.stderr
