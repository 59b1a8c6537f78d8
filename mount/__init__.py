"""The FUSE view of a job store and the ``jobstore`` command."""
