"""Durable storage of what a routing server did: decisions, outcomes, feedback and learner state.

``records`` holds the :class:`Store` the server writes through; ``sql`` the two databases
behind it (SQLite, PostgreSQL); ``traffic`` reads the logged traffic back in chunks for
reports and exports.  It sits below the server and the evaluation code, which both read it.
"""

from crossroads.store.records import (
    GAP_TIMEOUT_S,
    MIGRATIONS,
    DuplicateFeedbackError,
    Store,
    UnknownDecisionError,
    open_store,
)

__all__ = ["GAP_TIMEOUT_S", "MIGRATIONS", "DuplicateFeedbackError", "Store", "UnknownDecisionError", "open_store"]
