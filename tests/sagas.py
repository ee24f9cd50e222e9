"""Saga files for the run tests, written against the local test service (`env.BASE`)."""

from __future__ import annotations

FAST = "retry: {attempts: 3, backoff: 10ms, factor: 1, jitter: false}"

THREE = f"""\
version: 1
name: three
env: [BASE]
secrets: [TOKEN]
defaults:
  base_url: "{{{{ env.BASE }}}}"
  headers: {{Authorization: "Bearer {{{{ secrets.TOKEN }}}}"}}
  timeout: 2s
  {FAST}
  compensation:
    {FAST}
    expect: {{status: [200, 404]}}
steps:
  - id: a
    action: {{method: PUT, url: "/a/{{{{ run.id }}}}", json: {{v: 1}}}}
    outputs: {{ident: "{{{{ response.json.id }}}}"}}
    compensate: {{method: DELETE, url: "/a/{{{{ steps.a.outputs.ident }}}}"}}
  - id: b
    action:
      method: PUT
      url: "/b/{{{{ run.id }}}}"
      json: {{from_a: "{{{{ steps.a.outputs.ident }}}}"}}
    compensate: {{method: DELETE, url: "/b/{{{{ run.id }}}}"}}
  - id: c
    action: {{method: PUT, url: "/c/{{{{ run.id }}}}", json: {{v: 3}}}}
    compensate: {{method: DELETE, url: "/c/{{{{ run.id }}}}"}}
"""

# Actions get one attempt of 150ms: a slow answer leaves the step in doubt.
THREE_IMPATIENT = THREE.replace("  timeout: 2s", "  timeout: 150ms").replace(
    "attempts: 3, backoff: 10ms, factor: 1, jitter: false}\n  compensation",
    "attempts: 1}\n  compensation",
)
assert THREE_IMPATIENT.count("attempts: 1}") == 1

PIVOT = f"""\
version: 1
name: pivot
env: [BASE]
defaults:
  base_url: "{{{{ env.BASE }}}}"
  {FAST}
steps:
  - id: reserve
    action: {{method: PUT, url: "/reserve/{{{{ run.id }}}}"}}
    compensate: {{method: DELETE, url: "/reserve/{{{{ run.id }}}}"}}
  - id: charge
    action: {{method: PUT, url: "/charge/{{{{ run.id }}}}"}}
  - id: ship
    action: {{method: PUT, url: "/ship/{{{{ run.id }}}}"}}
    compensate: {{method: DELETE, url: "/ship/{{{{ run.id }}}}"}}
"""

TCC = f"""\
version: 1
name: tcc
env: [BASE]
defaults:
  base_url: "{{{{ env.BASE }}}}"
  {FAST}
steps:
  - id: seat
    needs: []
    action: {{method: PUT, url: "/seat/{{{{ run.id }}}}"}}
    compensate: {{method: DELETE, url: "/seat/{{{{ run.id }}}}"}}
    confirm: {{method: PUT, url: "/seat/{{{{ run.id }}}}/confirmed"}}
  - id: room
    needs: []
    action: {{method: PUT, url: "/room/{{{{ run.id }}}}"}}
    compensate: {{method: DELETE, url: "/room/{{{{ run.id }}}}"}}
    confirm: {{method: PUT, url: "/room/{{{{ run.id }}}}/confirmed"}}
  - id: mail
    action: {{method: PUT, url: "/mail/{{{{ run.id }}}}"}}
    compensate: {{method: DELETE, url: "/mail/{{{{ run.id }}}}"}}
    confirm: {{method: PUT, url: "/mail/{{{{ run.id }}}}/confirmed"}}
"""


def fan_out(width: int) -> str:
    steps = "\n".join(
        f"  - id: s{i}\n    needs: []\n"
        f'    action: {{method: PUT, url: "/fan/{i}/{{{{ run.id }}}}"}}\n'
        f'    compensate: {{method: DELETE, url: "/fan/{i}/{{{{ run.id }}}}"}}'
        for i in range(width)
    )
    return f"""\
version: 1
name: fan
env: [BASE]
defaults:
  base_url: "{{{{ env.BASE }}}}"
steps:
{steps}
"""


# A job started, then polled until done (SPEC §2.5); its state is read from `/jobs/<run>`.
POLL = """\
version: 1
name: job
env: [BASE]
defaults:
  base_url: "{{ env.BASE }}"
  retry: {attempts: 2, backoff: 10ms, jitter: false}
steps:
  - id: start
    action: {method: PUT, url: "/jobs/{{ run.id }}", json: {state: done, result: 42}}
    compensate: {method: DELETE, url: "/jobs/{{ run.id }}"}
  - id: wait
    action:
      method: GET
      url: "/jobs/{{ run.id }}"
      poll:
        until: "response.json.state == 'done'"
        fail_if: "response.json.state == 'failed'"
        every: 10ms
        timeout: 5s
    outputs: {result: "{{ response.json.result }}"}
"""


# An order of lines, one step instance per line (SPEC §2.5): `/orders/<run>`, then
# `/lines/<run>/<index>` for each sku, then `/totals/<run>` with the list of the lines' skus.
ORDER = """\
version: 1
name: order
inputs:
  skus: {type: array, items: {type: string}}
env: [BASE]
defaults:
  base_url: "{{ env.BASE }}"
  retry: {attempts: 2, backoff: 10ms, jitter: false}
steps:
  - id: order
    action: {method: PUT, url: "/orders/{{ run.id }}", json: {lines: "{{ inputs.skus | length }}"}}
    compensate: {method: DELETE, url: "/orders/{{ run.id }}"}
  - id: lines
    foreach: "{{ inputs.skus }}"
    as: sku
    action:
      method: PUT
      url: "/lines/{{ run.id }}/{{ item.index }}"
      json: {sku: "{{ item.sku }}", line: "{{ item.index }}"}
    outputs: {sku: "{{ response.json.sku }}"}
    compensate:
      method: DELETE
      url: "/lines/{{ run.id }}/{{ item.index }}"
      expect: {status: [200, 404]}
  - id: total
    action:
      {method: PUT, url: "/totals/{{ run.id }}", json: {skus: "{{ steps.lines.outputs.sku }}"}}
    compensate: {method: DELETE, url: "/totals/{{ run.id }}"}
"""

# One run per line of an --each file: `a` then `b`, each keyed by the line's `n`.
LINES = f"""\
version: 1
name: lines
env: [BASE]
secrets: [TOKEN]
inputs:
  n: {{type: integer}}
  tag: {{type: string, default: plain}}
defaults:
  base_url: "{{{{ env.BASE }}}}"
  headers: {{Authorization: "Bearer {{{{ secrets.TOKEN }}}}"}}
  timeout: 5s
  {FAST}
steps:
  - id: a
    action: {{method: PUT, url: "/a/{{{{ inputs.n }}}}", json: {{tag: "{{{{ inputs.tag }}}}"}}}}
    compensate: {{method: DELETE, url: "/a/{{{{ inputs.n }}}}"}}
  - id: b
    needs: [a]
    action: {{method: PUT, url: "/b/{{{{ inputs.n }}}}", json: {{n: "{{{{ inputs.n }}}}"}}}}
    compensate: {{method: DELETE, url: "/b/{{{{ inputs.n }}}}"}}
"""
