"""crossroads: route each LLM request to the model that best serves the user's objective."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``crossroads.Client`` and ``crossroads.AsyncClient``, imported on first use so that ``import crossroads`` stays fast."""
    if name in ("Client", "AsyncClient"):
        from crossroads import client

        return getattr(client, name)
    raise AttributeError(f"module 'crossroads' has no attribute {name!r}")
