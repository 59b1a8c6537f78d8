"""Teach Toil the ``local:`` and ``s3:`` locators in every process of the environment.

Toil 9.6 has no job store plugin mechanism: ``Toil.getJobStore`` knows its own
schemes only. The ``jobstore-toil.pth`` file installed into site-packages calls
:func:`install` at interpreter start. That only adds a meta-path finder (no
Toil import, so processes that never use Toil pay nothing); when ``toil.common``
or ``toil.options.common`` is first imported, the finder patches it:

* ``Toil.getJobStore`` returns our :class:`~jobstore.store.JobStore` for our schemes;
* ``parse_jobstore`` and ``Toil.canonical_locator`` make relative ``local:``
  paths absolute on the leader, before the locator is handed to workers;
* in Toil's interactive utilities (the ``toil`` command: ``toil status``,
  ``toil kill``, ``toil clean``, ...) stores are impatient (see
  :mod:`jobstore.patience`), and a store that cannot be reached is reported as
  one line rather than a traceback. Workflows (``python wf.py``,
  ``toil-cwl-runner``, ``_toil_worker``) keep waiting out outages.
"""

from __future__ import annotations

import importlib.machinery
import sys

# Not from typing: importing typing would double this module's start-up cost.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType
    from typing import Any

# Kept in step with jobstore.locator.SCHEMES; not imported from there so that
# interpreter start-up loads nothing but this module.
SCHEMES = ("local", "s3")


def _ours(locator: object) -> bool:
    return isinstance(locator, str) and ":" in locator and locator.split(":", 1)[0] in SCHEMES


def canonical_locator(locator: str) -> str:
    from jobstore.locator import canonical_locator

    return canonical_locator(locator)


def _wrap_parse_jobstore(original: Callable[[str], str]) -> Callable[[str], str]:
    if getattr(original, "_jobstore_patched", False):
        return original

    def parse_jobstore(jobstore_uri: str) -> str:
        if _ours(jobstore_uri):
            return canonical_locator(jobstore_uri)
        return original(jobstore_uri)

    parse_jobstore._jobstore_patched = True  # type: ignore[attr-defined]
    parse_jobstore.__doc__ = original.__doc__
    return parse_jobstore


def _patch_options(module: ModuleType) -> None:
    module.parse_jobstore = _wrap_parse_jobstore(module.parse_jobstore)  # type: ignore[attr-defined]


def _patch_common(module: ModuleType) -> None:
    toil_cls: Any = module.Toil
    if getattr(toil_cls, "_jobstore_patched", False):
        return
    original_get = toil_cls.getJobStore.__func__
    original_canonical = toil_cls.canonical_locator.__func__

    def getJobStore(cls: type, locator: str) -> Any:
        if _ours(locator):
            from jobstore.store import JobStore

            return JobStore(locator)
        return original_get(cls, locator)

    def canonical(cls: type, locator: str) -> str:
        if _ours(locator):
            return canonical_locator(locator)
        return str(original_canonical(cls, locator))

    getJobStore.__doc__ = original_get.__doc__
    toil_cls.getJobStore = classmethod(getJobStore)
    toil_cls.canonical_locator = classmethod(canonical)
    toil_cls.JOB_STORE_TYPES = [*toil_cls.JOB_STORE_TYPES, *SCHEMES]
    toil_cls._jobstore_patched = True
    if hasattr(module, "parse_jobstore"):
        _patch_options(module)
    if _is_toil_utility(sys.argv):
        _make_interactive()


def _is_toil_utility(argv: list[str]) -> bool:
    """Whether this process is the ``toil`` command (a person waits for it)."""
    import os.path

    return bool(argv) and os.path.basename(argv[0]) == "toil"


def _make_interactive() -> None:
    from jobstore import patience
    from jobstore.backend import BackendError

    patience.set_interactive()
    command = " ".join(["toil", *sys.argv[1:2]])
    original = sys.excepthook

    def excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if isinstance(exc, BackendError):  # ours, and already says what and where
            text = str(exc).strip()
            print(f"{command}: {text.splitlines()[0] if text else kind.__name__}", file=sys.stderr)
        else:
            original(kind, exc, tb)

    sys.excepthook = excepthook


_PATCHERS: dict[str, Callable[[ModuleType], None]] = {
    "toil.common": _patch_common,
    "toil.options.common": _patch_options,
}


class _PatchingLoader:
    """Runs the real loader, then patches the module it produced."""

    def __init__(self, wrapped: Any, patch: Callable[[ModuleType], None]) -> None:
        self._wrapped = wrapped
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._wrapped.exec_module(module)
        self._patch(module)


class _Finder:
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = _PATCHERS.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader, patch)  # type: ignore[assignment]
        return spec


def install() -> None:
    """Patch Toil now if it is loaded, else as soon as it is; never raises."""
    try:
        for name, patch in _PATCHERS.items():
            if name in sys.modules:
                patch(sys.modules[name])
        if not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    except Exception as e:  # a broken hook must never break an unrelated interpreter
        print(f"jobstore: could not hook into Toil: {e}", file=sys.stderr)
