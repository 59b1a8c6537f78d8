"""``jobstore fsck``: every object of a store checked against the layout, and set aside.

A check reads every key once (``quarantine/`` excepted) and reports each
problem as ``<kind> <key>: <what>``. The kinds:

``stray``
    a key the layout cannot have produced (:func:`jobstore.layout.stray_reason`);
    stores skip it with a warning.
``corrupt``
    a job key whose bytes do not load as that job's description
    (:class:`jobstore.store.CorruptJobError`), or a log message that is not the
    JSON Toil's leader reads (:class:`jobstore.store.CorruptLogError`); restarts
    stop on either.
``orphan``
    a ``cleanup=True`` file of a job that is not (or no longer loads) in the store.
``hint``
    hint-tree bookkeeping that does not match the files (see toil's
    ``HintedJobStore``; a live hinted file has a claim and no tombstone, a
    deleted one a tombstone and neither claim nor file): a claim without file
    or tombstone, a file without claim or tombstone, a tombstoned file.
``debris``
    what killed writers left outside every key: ``local:`` temporaries in
    ``.tmp``, ``s3:`` unfinished multipart uploads, older than ``--debris-age``.
``cursor``
    the log cursor does not parse.
``config``
    ``shared/config.pickle`` is missing or does not load: nothing resumes the
    store, and nothing here can repair it.

``repair`` never deletes data: bad objects move to
``quarantine/<time>-<random>/<their key>``, which no listing of the store reads;
a file missing its claim gets one, a claim without file gets a tombstone. The
one exception is an unfinished S3 upload, which holds no object to keep: it is
aborted. Repair is meant for a stopped run: a running leader and its workers
create claims, temporaries and uploads that are not debris yet.
"""

from __future__ import annotations

import json
import pickle
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

from toil.common import Config

from jobstore import layout
from jobstore.backend import Backend, BackendError, Debris, NotFound
from jobstore.store import CorruptJobError, JobStore, check_job, parse_log_cursor

#: Kinds in the order the summary lists them.
KINDS = ("stray", "corrupt", "orphan", "hint", "debris", "cursor", "config")


class Unusable(Exception):
    """No store can be checked at the locator (none there, or unreachable)."""


@dataclass(frozen=True)
class Problem:
    kind: str
    key: str
    what: str
    #: What repairs it (given the quarantine prefix); None when nothing can.
    fix: Callable[[str], str] | None = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        return f"{self.kind} {_printable(self.key)}: {self.what}"


@dataclass
class Report:
    problems: list[Problem]
    #: Objects read, debris not counted.
    checked: int

    def summary(self) -> str:
        if not self.problems:
            return f"clean: {self.checked} objects checked"
        counts = {k: sum(p.kind == k for p in self.problems) for k in KINDS}
        detail = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        return f"{len(self.problems)} problems in {self.checked} objects ({detail})"


def run(locator: str, do_repair: bool, debris_age: float | None, out: TextIO) -> int:
    """Check (and repair) the store; 0 when it is clean (after repair), else 1.

    Raises :class:`Unusable` when there is no store to check.
    """
    try:
        store = open_store(locator)
        report = check(store, debris_age)
    except BackendError as e:
        raise Unusable(str(e)) from None
    except OSError as e:
        raise Unusable(f"cannot read {locator}: {e.strerror or e}") from None
    for p in report.problems:
        print(p.line(), file=out)
    print(report.summary(), file=out)
    if not do_repair or not report.problems:
        return 1 if report.problems else 0
    prefix = quarantine_prefix()
    for p, done, error in repair(report.problems, prefix):
        key = _printable(p.key)
        print(
            f"repaired {p.kind} {key}: {done}" if done else f"NOT repaired {key}: {error}", file=out
        )
    after = check(store, debris_age)
    for p in after.problems:
        print(p.line(), file=out)
    print(f"after repair: {after.summary()}", file=out)
    return 1 if after.problems else 0


def open_store(locator: str) -> JobStore:
    """The store at ``locator``, configured from its config when that loads.

    Raises :class:`Unusable` when there is no store there at all.
    """
    store = JobStore(locator)
    backend = store.backend
    if not backend.exists(layout.CONFIG) and next(iter(backend.listdir("")), None) is None:
        raise Unusable(f"no job store at {store.locator}")
    config = _load_config(backend)
    if config is not None:
        backend.configure(config)
    return store


def check(store: JobStore, debris_age: float | None = None) -> Report:
    """Every problem of the store; debris must be older than ``debris_age`` seconds."""
    return _Checker(store.backend).run(
        store.backend.stale_debris_seconds if debris_age is None else debris_age
    )


def quarantine_prefix() -> str:
    """A fresh prefix under ``quarantine/`` for one repair: nothing there is ever replaced."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{layout.QUARANTINE}{stamp}-{secrets.token_hex(3)}/"


def repair(problems: list[Problem], prefix: str) -> Iterator[tuple[Problem, str | None, str]]:
    """Repair each problem; yields ``(problem, done, error)``: what was done, or why not."""
    for p in problems:
        if p.fix is None:
            yield p, None, "cannot be repaired here"
            continue
        try:
            yield p, p.fix(prefix), ""
        except Exception as e:
            yield p, None, f"{type(e).__name__}: {e}"


class _Checker:
    def __init__(self, backend: Backend) -> None:
        self.b = backend
        self.problems: list[Problem] = []
        self.checked = 0

    def run(self, debris_age: float) -> Report:
        live = self._jobs()
        logs: list[str] = []
        hinted_files: set[str] = set()
        claims: set[str] = set()
        tombstones: set[str] = set()
        for top in self.b.listdir(""):
            if not top.is_dir:
                self._key(top.name)
                continue
            if top.name + "/" in (layout.QUARANTINE, layout.JOBS):
                continue
            for key in self.b.list(top.name + "/"):
                if not self._key(key):
                    continue
                if key.startswith(layout.FILES):
                    owner = layout.job_file_owner(key)
                    if owner is not None and owner not in live:
                        self._add("orphan", key, f"cleanup file of job {owner}, not in the store")
                    elif owner is None and layout.is_hinted(key[len(layout.FILES) :]):
                        hinted_files.add(key[len(layout.FILES) :])
                elif key.startswith(layout.HINTS):
                    kind, slot = layout.parse_hint_path(key[len(layout.HINTS) :]) or ("", "")
                    (claims if kind == "files" else tombstones).add(slot)
                elif key.startswith(layout.LOGS):
                    logs.append(key)
                elif key == layout.LOG_CURSOR:
                    self._cursor()
        with ThreadPoolExecutor(self.b.concurrency, thread_name_prefix="fsck") as pool:
            for key, why in zip(logs, pool.map(self._load_log, logs), strict=True):
                if why is not None:
                    self._add("corrupt", key, why)
        self._hints(hinted_files, claims, tombstones)
        if _load_config(self.b) is None:
            self._add("config", layout.CONFIG, "missing or not a Toil config", fixable=False)
        for item in self.b.debris(debris_age):
            self.problems.append(
                Problem(
                    "debris",
                    item.name,
                    f"left by a killed writer {item.age / 3600:.1f} hours ago",
                    partial(self._clear, item=item),
                )
            )
        return Report(self.problems, self.checked)

    # ------------------------------------------------------------ checks

    def _key(self, key: str) -> bool:
        """Count the key; report it when stray. True when the layout can have made it."""
        self.checked += 1
        why = layout.stray_reason(key)
        if why is not None:
            self._add("stray", key, why)
        return why is None

    def _jobs(self) -> set[str]:
        """IDs of the jobs that load; stray and corrupt job keys reported.

        Descriptions load ``backend.concurrency`` at a time (one request each on S3).
        """
        keys = [k for k in self.b.list(layout.JOBS) if self._key(k)]
        live: set[str] = set()
        with ThreadPoolExecutor(self.b.concurrency, thread_name_prefix="fsck") as pool:
            for key, error in zip(keys, pool.map(self._load_job, keys), strict=True):
                job_id = layout.job_id_from_key(key)
                if error is None:
                    live.add(str(job_id))
                elif isinstance(error, CorruptJobError):
                    self._add("corrupt", key, error.why + f" (job {job_id})")
        return live

    def _load_job(self, key: str) -> Exception | None:
        """Why the job at ``key`` does not load (NotFound: deleted meanwhile), or None."""
        try:
            check_job(key, str(layout.job_id_from_key(key)), self.b.get_bytes(key))
        except (NotFound, CorruptJobError) as e:
            return e
        return None

    def _load_log(self, key: str) -> str | None:
        """Why the log message at ``key`` is not one Toil's leader can read, or None."""
        try:
            json.loads(self.b.get_bytes(key))
        except NotFound:
            return None
        except ValueError as e:  # UnicodeDecodeError too
            return f"not a Toil log message, which is JSON ({type(e).__name__}: {e})"
        return None

    def _cursor(self) -> None:
        try:
            parse_log_cursor(self.b.get_bytes(layout.LOG_CURSOR))
        except NotFound:
            return
        except ValueError as e:
            self._add("cursor", layout.LOG_CURSOR, f"{e} (log messages would be read again)")

    def _hints(self, files: set[str], claims: set[str], tombstones: set[str]) -> None:
        for slot in sorted(files | claims):
            file_key = layout.FILES + slot
            claim_key = layout.HINTS + slot
            dead = slot in tombstones
            tombstone_key = layout.HINTS + layout.tombstone_path(slot)
            if slot in files and dead:
                self._add(
                    "hint",
                    file_key,
                    f"deleted (tombstone {tombstone_key}) but still stored",
                    partial(self._set_aside_all, keys=(file_key, claim_key)),
                )
            elif slot in files and slot not in claims:
                self._add(
                    "hint",
                    file_key,
                    f"no claim {claim_key}: its ID could be handed out again",
                    partial(self._put_marker, key=claim_key),
                )
            elif slot not in files and dead:
                self._add("hint", claim_key, "claim of a deleted file")
            elif slot not in files:
                self._add(
                    "hint",
                    claim_key,
                    f"claim with no file and no tombstone {tombstone_key}",
                    partial(self._retire_claim, claim=claim_key, tombstone=tombstone_key),
                )

    def _add(
        self,
        kind: str,
        key: str,
        what: str,
        fix: Callable[[str], str] | None = None,
        fixable: bool = True,
    ) -> None:
        if fix is None and fixable:
            fix = partial(self._set_aside, key=key)
        self.problems.append(Problem(kind, key, what, fix))

    # ----------------------------------------------------------- repairs

    def _set_aside(self, quarantine: str, key: str) -> str:
        self.b.move(key, quarantine + key)
        return f"moved to {_printable(quarantine + key)}"

    def _set_aside_all(self, quarantine: str, keys: tuple[str, ...]) -> str:
        done = [self._set_aside(quarantine, k) for k in keys if self.b.exists(k)]
        return "; ".join(done) or "nothing left to move"

    def _put_marker(self, quarantine: str, key: str) -> str:
        self.b.put_if_absent(key)
        return f"wrote {_printable(key)}"

    def _retire_claim(self, quarantine: str, claim: str, tombstone: str) -> str:
        # The ID may have been handed out before its writer died: never again.
        self.b.put_if_absent(tombstone)
        return f"wrote {_printable(tombstone)}; {self._set_aside(quarantine, claim)}"

    def _clear(self, quarantine: str, item: Debris) -> str:
        if self.b.clear_debris(item, keep_under=quarantine):
            return f"moved to {_printable(quarantine + item.name)}"
        return "removed (it holds no object)"


def _load_config(backend: Backend) -> Config | None:
    """The store's Toil config, or None when it is missing or does not load."""
    try:
        config = pickle.loads(backend.get_bytes(layout.CONFIG))
    except Exception:  # missing, or junk: unpickling junk raises nearly anything
        return None
    return config if isinstance(config, Config) else None


def _printable(key: str) -> str:
    """A key as one line of output: odd characters (newlines, controls) escaped."""
    return key if key.isprintable() else repr(key)
