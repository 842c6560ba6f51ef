"""Developer tools of the project that are not part of the service (``python -m tools.mutate``)."""
