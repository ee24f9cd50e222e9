"""Helpers for testing sagas: a small HTTP service on 127.0.0.1 that applies requests once per
idempotency key, records what it received, and injects faults (`service`). The demo runs on it.
"""
