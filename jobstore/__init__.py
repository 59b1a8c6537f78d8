"""A fast, safe, browsable job store for Toil: ``from jobstore import JobStore``.

Importing this package is cheap: Toil (and boto3) load only when ``JobStore``
is first used, because the package is imported at start-up of every Python
process through the hook in ``jobstore-toil.pth``.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["JobStore", "__version__"]

# Not from typing: this module loads at every interpreter start (see _toil_hook).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from jobstore.store import JobStore


def __getattr__(name: str) -> type[JobStore]:  # PEP 562: load the heavy parts on first use
    if name == "JobStore":
        from jobstore.store import JobStore

        return JobStore
    raise AttributeError(f"module 'jobstore' has no attribute {name!r}")
