"""Teach Toil the ``local:`` and ``s3:`` locators in every process of the environment.

Toil 9.6 has no job store plugin mechanism: ``Toil.getJobStore`` knows its own
schemes only. The ``jobstore-toil.pth`` file installed into site-packages calls
:func:`install` at interpreter start. That only adds a meta-path finder (no
Toil import, so processes that never use Toil pay nothing); when ``toil.common``
or ``toil.options.common`` is first imported, the finder patches it:

* ``Toil.getJobStore`` returns our :class:`~jobstore.store.JobStore` for our schemes;
* our warnings (stray objects, a leader taken over) stay in the run's logs,
  which Toil would otherwise silence as an "exotic" package's;
* ``parse_jobstore`` and ``Toil.canonical_locator`` make relative ``local:``
  paths absolute on the leader, before the locator is handed to workers;
* a locator that names no store (``local:`` with no path, ``locl:/x``) is one
  line on the command line, not Toil's 65 lines of usage or its traceback.

Which schemes are ours comes from :data:`jobstore.locator.BACKENDS`, read only
once Toil is being imported.
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
    from collections.abc import Callable, Collection, Sequence
    from types import ModuleType
    from typing import Any, NoReturn


def _schemes() -> Collection[str]:
    from jobstore.locator import BACKENDS

    return BACKENDS


def _ours(locator: object) -> bool:
    return isinstance(locator, str) and ":" in locator and locator.split(":", 1)[0] in _schemes()


def canonical_locator(locator: str) -> str:
    from jobstore.locator import canonical_locator

    return canonical_locator(locator)


def _unknown_type(locator: str) -> str | None:
    """Why no job store, ours or Toil's, serves ``locator``; None when one does."""
    from toil.common import Toil

    name = Toil.parseLocator(locator)[0]
    if name in Toil.JOB_STORE_TYPES or name in _schemes():
        return None
    from jobstore.locator import usage

    toils = ", ".join(f"{t}:" for t in Toil.JOB_STORE_TYPES if t not in _schemes())
    return f"unknown job store type {name!r} in {locator!r} (want {usage()}, or Toil's {toils})"


def _reject(reason: str, caller: Any) -> NoReturn:
    """Fail a bad locator; when argparse is converting it, as one line and exit status 2.

    argparse would print the whole usage (65 lines for a Toil workflow) above
    the reason, so the reason is printed here the way argparse words an error.
    """
    from jobstore.locator import InvalidLocator

    if caller.f_globals.get("__name__") == "argparse":
        parser, action = caller.f_locals.get("self"), caller.f_locals.get("action")
        prog = getattr(parser, "prog", None) or sys.argv[0]
        name = "/".join(getattr(action, "option_strings", ())) or getattr(action, "dest", "")
        print(f"{prog}: error: argument {name}: {reason}", file=sys.stderr)
        raise SystemExit(2)
    raise InvalidLocator(reason)


def _check(jobstore_uri: str, caller: Any) -> str | None:
    """The canonical form of one of our locators, None for one of Toil's; rejects the rest.

    ``caller`` is the frame that called the checking function: argparse's, on a command line.
    """
    if _ours(jobstore_uri):
        from jobstore.locator import InvalidLocator

        try:
            return canonical_locator(jobstore_uri)
        except InvalidLocator as e:
            _reject(str(e), caller)
    reason = _unknown_type(jobstore_uri)
    if reason is not None:
        _reject(reason, caller)
    return None


def _wrap_parse_jobstore(original: Callable[[str], str]) -> Callable[[str], str]:
    if getattr(original, "_jobstore_patched", False):
        return original

    def parse_jobstore(jobstore_uri: str) -> str:
        canonical = _check(jobstore_uri, sys._getframe(1))
        return original(jobstore_uri) if canonical is None else canonical

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
        reason = _unknown_type(locator)
        if reason is not None:
            raise RuntimeError(reason)  # Toil's own says "{cls.parseLocator(locator)[0]!r}"
        return original_get(cls, locator)

    def canonical(cls: type, locator: str) -> str:
        if _ours(locator):
            return canonical_locator(locator)
        return str(original_canonical(cls, locator))

    getJobStore.__doc__ = original_get.__doc__
    toil_cls.getJobStore = classmethod(getJobStore)
    toil_cls.canonical_locator = classmethod(canonical)
    toil_cls.JOB_STORE_TYPES = [*toil_cls.JOB_STORE_TYPES, *_schemes()]
    toil_cls._jobstore_patched = True
    if hasattr(module, "parse_jobstore"):
        _patch_options(module)
    module.parser_with_common_options = _wrap_parser(module.parser_with_common_options)  # type: ignore[attr-defined]
    if _is_toil_utility(sys.argv):
        _make_interactive()


def _wrap_parser(original: Callable[..., Any]) -> Callable[..., Any]:
    """Have the parser of ``toil status | clean | kill | ...`` check the locator as it parses.

    Toil's utilities take the locator as a plain string and fail later, with a traceback.
    """

    def parser_with_common_options(*args: Any, **kwargs: Any) -> Any:
        parser = original(*args, **kwargs)
        for action in parser._actions:
            if action.dest == "jobStore" and action.type is str:
                action.type = _check_jobstore
        return parser

    parser_with_common_options.__doc__ = original.__doc__
    return parser_with_common_options


def _check_jobstore(jobstore_uri: str) -> str:
    """The locator unchanged, once it is known to name a store (as ``parse_jobstore`` checks)."""
    _check(jobstore_uri, sys._getframe(1))
    return jobstore_uri


def _patch_worker(module: ModuleType) -> None:
    """Workers note each attempt they start in our stores' run ledger (one write)."""
    original: Any = module.workerScript
    if getattr(original, "_jobstore_patched", False):
        return

    def workerScript(
        job_store: Any, config: Any, job_name: str, job_store_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        record = getattr(job_store, "record_attempt", None)
        if record is not None:
            try:
                record(job_store_id)
            except Exception as e:  # the ledger must never cost the job its run
                print(
                    f"jobstore: could not record the attempt of {job_store_id}: {e}",
                    file=sys.stderr,
                )
        return original(job_store, config, job_name, job_store_id, *args, **kwargs)

    workerScript.__doc__ = original.__doc__
    workerScript._jobstore_patched = True  # type: ignore[attr-defined]
    module.workerScript = workerScript  # type: ignore[attr-defined]


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


def _patch_logging(module: ModuleType) -> None:
    """Keep our store's warnings in Toil's logs.

    Toil sets every package logger it finds to CRITICAL when it configures
    logging; the job store is part of the run, not an exotic package, so its
    logger goes back to the level of the run's logs.
    """
    original: Any = module.suppress_exotic_logging
    if getattr(original, "_jobstore_patched", False):
        return

    def suppress_exotic_logging(local_logger: str) -> None:
        original(local_logger)
        import logging

        logging.getLogger("jobstore").setLevel(logging.NOTSET)

    suppress_exotic_logging.__doc__ = original.__doc__
    suppress_exotic_logging._jobstore_patched = True  # type: ignore[attr-defined]
    module.suppress_exotic_logging = suppress_exotic_logging  # type: ignore[attr-defined]


_PATCHERS: dict[str, Callable[[ModuleType], None]] = {
    "toil.common": _patch_common,
    "toil.options.common": _patch_options,
    "toil.worker": _patch_worker,
    "toil.statsAndLogging": _patch_logging,
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
