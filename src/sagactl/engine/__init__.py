"""The saga engine: the state machine (forward, confirm, compensate, resume), its scheduler and
its attempt loop. It derives each move from the journal, emits events instead of printing, and
takes every side effect (executor client, journal, sleep, clock) as a parameter.
"""
