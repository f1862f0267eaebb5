"""The built-in detector catalog: the registry with every detector module of ``worker.detectors`` imported.

Kept apart from ``worker.registry`` so that registration never imports the detectors back (no import cycle);
imports stay light: no TensorFlow here."""

from worker.registry import Registry, registry


def default_registry() -> Registry:
    import worker.detectors  # noqa: F401  (registers on import)

    return registry
