"""How long this process waits for a storage service that does not answer.

One setting per process, because only the process knows what it is for:

* the processes of a running workflow -- its leader, its workers, and any
  library use -- are *patient* (the default): a store that stops answering
  for a minute (a restarting MinIO, a network blip, S3 throttling) must cost
  a pause, not the run, and there is nobody at a terminal to tell;
* an interactive command -- ``jobstore mount``, ``toil status``, ``toil kill``
  and the other ``toil`` utilities -- is *impatient*: a person waits for it,
  and a wrong or dead endpoint must be reported in seconds, not after a
  minute of silent retries. Its entry point calls :func:`set_interactive`
  before it opens a store (the ``jobstore`` command itself; for ``toil``, the
  hook that teaches Toil our locators).

It cannot be decided per call (say, an impatient first ``resume()``): a
worker's first call is ``resume()`` too, and a worker started during an
outage must wait it out like the rest of the run. Backends without a network
(``local:``) ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Patience:
    """Bounds on waiting for one request, from its first attempt to its last."""

    name: str
    #: No new attempt of a request starts later than this after its first one began.
    retry_seconds: float
    #: Longest pause between two attempts (backoff doubles up to this, with jitter).
    max_backoff: float
    #: Longest wait for a connection, and for the next bytes of a reply, per attempt.
    connect_timeout: float
    read_timeout: float


#: Rides out an outage of a minute or two with room to spare (a request begun just before
#: a 60 s outage ends within a backoff of its end); a store that is really gone fails
#: the run within about three minutes.
PATIENT = Patience("patient", retry_seconds=180, max_backoff=8, connect_timeout=10, read_timeout=60)
#: An unreachable endpoint is reported within about 4 s whether it refuses (retries stop
#: after 3 s) or stalls (one attempt waits 4 s for a reply). A healthy store answers in
#: milliseconds; a first byte later than 4 s is an error here (with no time left to retry).
INTERACTIVE = Patience(
    "interactive", retry_seconds=3, max_backoff=1, connect_timeout=2, read_timeout=4
)

_current = PATIENT


def current() -> Patience:
    return _current


def set_interactive() -> None:
    """Make this process (and children it forks later) report unreachable stores fast.

    Call before the first store is opened: clients already made keep their settings.
    """
    global _current
    _current = INTERACTIVE
