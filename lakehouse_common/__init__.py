"""Code both services need, in one place: the event contract, settings, logging,
observability (metrics and health), secret redaction and the error hierarchy."""
