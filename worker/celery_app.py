"""The worker's Celery app: ``celery -A worker.celery_app worker -Q gpu -c 1``."""

from app.settings import get_settings
from worker.broker import make_celery

celery_app = make_celery(get_settings(), with_tasks=True)
