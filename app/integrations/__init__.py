"""Integrations with other systems of an ML pipeline (the MLflow Model Registry)."""
