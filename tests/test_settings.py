import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, **env):
    environment = {
        key: value for key, value in os.environ.items() if key != "SECRET_KEY"
    }
    environment.update(DJANGO_SETTINGS_MODULE="config.settings.production", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_deploy_check():
    completed = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
    )
    assert completed.returncode == 0, completed.stderr
    assert "no issues" in completed.stdout


def test_production_refuses_missing_secret_key():
    completed = run_manage("check")
    assert completed.returncode != 0
    assert "SECRET_KEY is missing" in completed.stderr


def test_recorder_settings_read_from_environment():
    completed = run_manage(
        "shell",
        "--verbosity",
        "0",
        "-c",
        "from django.conf import settings; "
        "print(settings.AGENTMARGIN_RECORDER_PIPELINE, "
        "settings.AGENTMARGIN_RECORDER_PREPARED_STATEMENTS)",
        SECRET_KEY=secrets.token_urlsafe(50),
        AGENTMARGIN_RECORDER_PIPELINE="false",
        AGENTMARGIN_RECORDER_PREPARED_STATEMENTS="false",
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["False", "False"]
