"""crossroads: route each LLM request to the model that best serves the user's objective."""

__version__ = "0.1.0"
