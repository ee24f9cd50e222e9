"""One executor per kind of step: it prepares a request from a step and a scope, makes one
attempt, and says what the attempt came to (success, retryable, failure; whether it may have
reached the service). Only `http` so far. Executors neither journal, print nor decide retries:
the engine does.
"""
