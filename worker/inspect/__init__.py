"""Static inspection of artifacts, one module per format: parse bytes, never load; return findings.

Nothing here imports a detector, Celery, the database or TensorFlow. Detectors (``worker.detectors``) ask this
package what a file holds; ``worker.inspect.formats`` identifies the kind from content alone.

The interface is small: ``checks.structure_check(kind)`` gives the per-format check (``path -> list[Finding]``) of a
kind, and ``archives.Walker`` finds every pickle stream through every container layer.
"""
