"""Production settings plus the benchmark's reference views (bench/urls.py); used only by bench_api.py."""

from config.settings.production import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
