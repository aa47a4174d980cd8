""".env.example lists every environment variable Rowbell reads (README, "How it runs"): each settings module is
imported in a process of its own that records every name it asks the environment for, and every name it asked
for must be listed; so must the Procfile's `${NAME:-default}` variables. A commented `# NAME=` line is listed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULES = ["base", "local", "production", "test"]

# Runs in the child process: imports the module named by argv[1] and prints the names it read. django-environ's
# Env.get_value is the one door every env(...), env.bool, env.list, env.db and the like goes through; a read of
# os.environ (os.getenv, `in`, .get, [...]) made from a file in the directory argv[2] is recorded too.
RECORDER = """
import json, os, sys
import environ

module, settings_dir = sys.argv[1:3]
names = set()

get_value = environ.Env.get_value
def recorded_get_value(self, var, *args, **kwargs):
    names.add(f"{self.prefix}{var}")
    return get_value(self, var, *args, **kwargs)
environ.Env.get_value = recorded_get_value

getitem = os._Environ.__getitem__
def recorded_getitem(self, key):
    frame = sys._getframe(1)
    while frame is not None:
        if os.path.dirname(frame.f_code.co_filename) == settings_dir:
            names.add(key)
            break
        frame = frame.f_back
    return getitem(self, key)
os._Environ.__getitem__ = recorded_getitem

import importlib
importlib.import_module(module)
print(json.dumps(sorted(names)))
"""


def environment_reads(module: str, directory: Path, env_extra: dict[str, str]) -> set[str]:
    """The environment variables `module` reads when imported in a fresh process (names, not values).

    Reads through django-environ count wherever they are made; direct reads of os.environ count when made
    from a file in `directory`. Raises AssertionError with the child's output if the import fails.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROWBELL_"))}
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-c", RECORDER, module, str(directory)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def settings_reads(module: str, tmp_path: Path) -> set[str]:
    """The environment variables `config.settings.<module>` reads.

    The .env file is read, from an empty file, so that the reads made only when it is are made too (a branch
    not taken reads nothing, so reads under a condition are seen only when the condition holds).
    """
    empty = tmp_path / "empty.env"
    empty.touch()
    return environment_reads(
        f"config.settings.{module}",
        ROOT / "config" / "settings",
        {
            "DJANGO_SETTINGS_MODULE": f"config.settings.{module}",
            "DJANGO_READ_DOT_ENV_FILE": "true",
            "DJANGO_ENV_FILE": str(empty),
            "DJANGO_SECRET_KEY": "kR9wq2Jx7mVd0sLp4ZtYb8NcHf3GuEaW6oQiT1yXnKjMrPzS5vBe",
            # What production requires.
            "DATABASE_URL": "postgres://rowbell@db.example.com/rowbell",
            "REDIS_URL": "redis://redis.example.com:6379/0",
            "ROWBELL_PUBLIC_URL": "https://rowbell.example.com",
            "DJANGO_ALLOWED_HOSTS": "rowbell.example.com",
        },
    )


def env_example_names() -> set[str]:
    """Names .env.example lists: `NAME=value` and commented `# NAME=value` lines."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def procfile_names() -> set[str]:
    """Variables the commands of Procfile (a deploy) and Procfile.dev (`make run`) expand, `${NAME}` or
    `${NAME:-default}`."""
    text = (ROOT / "Procfile").read_text() + (ROOT / "Procfile.dev").read_text()
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


@pytest.mark.parametrize("module", SETTINGS_MODULES)
def test_every_variable_a_settings_module_reads_is_in_env_example(module, tmp_path):
    missing = sorted(settings_reads(module, tmp_path) - env_example_names())
    assert not missing, f"config.settings.{module} reads variables .env.example does not list: {', '.join(missing)}"


def test_every_variable_the_procfile_expands_is_in_env_example():
    missing = sorted(procfile_names() - env_example_names())
    assert not missing, f"the Procfile expands variables .env.example does not list: {', '.join(missing)}"


def test_env_example_lists_no_variable_that_nothing_reads(tmp_path):
    # A misspelt or retired name in .env.example would be silently ignored by the settings.
    read = procfile_names().union(*(settings_reads(module, tmp_path) for module in SETTINGS_MODULES))
    unread = sorted(env_example_names() - read)
    assert not unread, f".env.example lists variables nothing reads: {', '.join(unread)}"


def test_the_recording_sees_reads_through_django_environ_and_os_environ(tmp_path):
    (tmp_path / "probe_settings.py").write_text(
        "import os\n"
        "import environ\n"
        "env = environ.Env()\n"
        "A = env.db('PROBE_DB', default='postgres://localhost/probe')\n"
        "B = env.list('PROBE_LIST', default=[])\n"
        "C = os.environ.get('PROBE_GET')\n"
        "D = os.getenv('PROBE_GETENV')\n"
        "E = 'PROBE_IN' in os.environ\n"
        "F = os.environ['PATH']\n"
    )
    reads = environment_reads("probe_settings", tmp_path, {"PYTHONPATH": str(tmp_path)})
    assert reads == {"PROBE_DB", "PROBE_LIST", "PROBE_GET", "PROBE_GETENV", "PROBE_IN", "PATH"}
