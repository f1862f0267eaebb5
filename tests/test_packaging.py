"""Production shape: the compose file validates offline, the API never imports TensorFlow."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_docker_compose_file_is_valid():
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: scripts/ensure-services.sh installs Debian's package (./run test runs it)"
    result = subprocess.run([compose, "-f", "docker-compose.yml", "config", "-q"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    services = subprocess.run([compose, "-f", "docker-compose.yml", "config", "--services"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert set(services) == {"api", "migrate", "worker-cpu", "worker-gpu", "postgres", "redis"}


def test_api_does_not_import_tensorflow_or_detectors():
    code = "import sys; from app.main import create_app; create_app(); print(sorted(m for m in ('tensorflow', 'keras', 'art', 'cleanlab', 'worker.tasks', 'worker.detectors') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/tmp", capture_output=True, text=True, check=True, env={"POISONSCAN_DATA_DIR": "/tmp/poisonscan-import-check", "PATH": "/usr/bin"})
    assert out.stdout.strip() == "[]"


def test_migrations_ship_with_the_package():
    from app.migrate import MIGRATIONS_DIR

    assert (MIGRATIONS_DIR / "env.py").is_file() and (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
