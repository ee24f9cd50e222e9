"""A saga's definition: YAML read with positions, checked against the schema and for references,
built into the model (`loader`); templates rendered in a sandbox, secrets followed through them
(`templating`); the step graph (`graph`); inputs and env files (`inputs`, `envfile`).

Nothing here sends a request or opens the journal.
"""
