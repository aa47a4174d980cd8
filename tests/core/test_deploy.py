"""Production as a deploy runs it: Django's deployment checklist passes with no warning, and the Procfile's
`release` and `web` processes, run in that order as a platform runs them, serve the admin with its styles."""

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import _database_url, free_port

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    # A key as `python -c 'import secrets; print(secrets.token_urlsafe(50))'` makes one.
    "DJANGO_SECRET_KEY": "kR9wq2Jx7mVd0sLp4ZtYb8NcHf3GuEaW6oQiT1yXnKjMrPzS5vBe",
    "ROWBELL_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1kby1ub3QtdXNlLWluLXByb2Q=",
    "DJANGO_ALLOWED_HOSTS": "rowbell.example.com",
    "ROWBELL_PUBLIC_URL": "https://rowbell.example.com",
    "DATABASE_URL": "postgres://rowbell@db.example.com:5432/rowbell",
    "REDIS_URL": "redis://redis.example.com:6379/0",
}


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROWBELL_"))}
    env.update(PRODUCTION_ENV)
    env.update(extra)
    return env


def _check_deploy(**extra):
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(**extra),
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


# --- The .env file ------------------------------------------------------------------------------


def _api_rate(module: str, env_file: Path, **extra: str) -> str:
    """ROWBELL_API_RATE as `config.settings.<module>` reads it, with DJANGO_ENV_FILE naming `env_file`."""
    env = _production_env(DJANGO_SETTINGS_MODULE=f"config.settings.{module}", DJANGO_ENV_FILE=str(env_file), **extra)
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.ROWBELL_API_RATE)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("module", "extra", "rate"),
    [
        # A deploy is configured by its platform's environment: a .env left in the build is not read ...
        ("production", {}, "1200/min"),
        # ... unless asked for, as cookiecutter-django's DJANGO_READ_DOT_ENV_FILE.
        ("production", {"DJANGO_READ_DOT_ENV_FILE": "true"}, "7/min"),
        # `make run` and `make test` keep their configuration in .env.
        ("local", {}, "7/min"),
        ("test", {}, "7/min"),
        ("local", {"DJANGO_READ_DOT_ENV_FILE": "false"}, "1200/min"),
        # The environment wins over the file.
        ("local", {"ROWBELL_API_RATE": "9/min"}, "9/min"),
    ],
)
def test_the_dot_env_file_is_read_by_local_and_test_settings_and_by_production_only_when_asked(
    module, extra, rate, tmp_path
):
    env_file = tmp_path / ".env"
    env_file.write_text("ROWBELL_API_RATE=7/min\n")
    assert _api_rate(module, env_file, **extra) == rate


# --- The Procfile, run as a platform runs it ------------------------------------------------------


def _procfile() -> dict[str, str]:
    """The Procfile's process types and their commands, read as Heroku and honcho read them: `<type>: <command>`."""
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(.+)", line.strip())
        if match:
            processes[match[1]] = match[2]
    return processes


def _get(port: int, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    # As a platform's router forwards a browser's request: the public host name, TLS ended at the router.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "rowbell.example.com", "X-Forwarded-Proto": "https"})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _answering(port: int, web: subprocess.Popen, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and web.poll() is None:
        try:
            _get(port, "/admin/login/")
            return True
        except OSError:
            time.sleep(0.2)
    return False


@pytest.mark.django_db
def test_a_deploy_run_as_the_procfile_says_serves_the_admin_login_and_its_styles(tmp_path):
    # Release, then web, each through a shell as a platform runs them, with production settings. They use the
    # test database, already migrated (release has nothing to apply), and put static files in the test's own
    # directory.
    from django.db import connection

    procfile = _procfile()
    port = free_port()
    env = _production_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        DATABASE_URL=_database_url(connection.settings_dict),
        REDIS_URL=settings.CELERY_BROKER_URL,
        DJANGO_STATIC_ROOT=str(tmp_path / "staticfiles"),
        PORT=str(port),
        WEB_CONCURRENCY="1",
        PYTHONUNBUFFERED="1",
    )
    release = subprocess.run(
        ["sh", "-c", procfile["release"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stdout + release.stderr

    log = tmp_path / "web.log"
    with log.open("wb") as out:
        web = subprocess.Popen(
            ["sh", "-c", procfile["web"]],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert _answering(port, web), log.read_text(errors="replace")
        page, html = _get(port, "/admin/login/")
        assert page.status == 200, log.read_text(errors="replace")[-3000:]

        # The stylesheet by its hashed name, as the manifest collectstatic wrote maps it.
        stylesheet = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', html.decode())
        assert stylesheet, html.decode()
        css, body = _get(port, stylesheet[1])
        assert css.status == 200 and b"body" in body
        assert css.getheader("Content-Type", "").startswith("text/css")
        assert (tmp_path / "staticfiles" / "staticfiles.json").exists()
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()


def _static_collect(root: Path, **extra: str) -> subprocess.Popen:
    env = _production_env(DJANGO_STATIC_ROOT=str(root), **extra)
    return subprocess.Popen(
        [sys.executable, "manage.py", "static_collect"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_web_processes_starting_together_take_turns_to_collect(tmp_path):
    # Three `web` starts on one directory: without the lock, the manifest storage of one deletes what another
    # is post-processing (FileNotFoundError), and that web process never starts.
    starts = [_static_collect(tmp_path / "staticfiles") for _ in range(3)]
    outputs = [(start.wait(timeout=180), start.stdout.read()) for start in starts]
    assert [code for code, _ in outputs] == [0, 0, 0], outputs
    assert (tmp_path / "staticfiles" / "staticfiles.json").exists()


def test_a_build_that_collected_already_can_turn_the_start_s_collect_off(tmp_path):
    # A read-only file system at run time: the start must not write.
    start = _static_collect(tmp_path / "staticfiles", ROWBELL_COLLECTSTATIC_AT_START="false")
    assert start.wait(timeout=120) == 0, start.stdout.read()
    assert not (tmp_path / "staticfiles").exists()


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_URL", "ROWBELL_PUBLIC_URL", "DJANGO_ALLOWED_HOSTS"])
def test_a_deploy_missing_a_setting_it_must_give_fails_naming_it(name):
    # Unset, each fell back to the developer's machine: 127.0.0.1 in every tracking link, a local database...
    env = {k: v for k, v in _production_env().items() if k != name}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"Set the {name} environment variable" in result.stderr
