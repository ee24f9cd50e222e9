"""Secrets in the saga's own terms (SPEC §2.1, §2.2, §2.7, §4): secret outputs and safe steps
sent again on resume, `auth`, `b64encode`, env values and inputs that hold a secret, and the
checks `validate` makes."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import cli
from sagactl.journal import open_journal
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service

PASSWORD = "pa55:w/rd+="
TOKEN_FROM_LOGIN = "tok-from-login-7731"


def login_saga(safe: bool) -> str:
    """A login whose token is a secret output; an order sent with it; a pivot that fails."""
    return f"""\
version: 1
name: shop
env: [BASE]
secrets: [PASSWORD]
defaults:
  base_url: "{{{{ env.BASE }}}}"
  retry: {{attempts: 1}}
  compensation: {{retry: {{attempts: 2, backoff: 10ms}}}}
steps:
  - id: login
    {"safe: true" if safe else ""}
    action:
      method: PUT
      url: "/login/{{{{ run.id }}}}"
      auth: {{basic: [shop, "{{{{ secrets.PASSWORD }}}}"]}}
    outputs:
      token: {{value: "{{{{ response.json.token }}}}", secret: true}}
  - id: order
    action:
      method: PUT
      url: "/order/{{{{ run.id }}}}"
      auth: {{bearer: "{{{{ steps.login.outputs.token }}}}"}}
    compensate: {{method: DELETE, url: "/order/{{{{ run.id }}}}"}}
  - id: ship
    action: {{method: PUT, url: "/ship/{{{{ run.id }}}}"}}
"""


@pytest.fixture
def service() -> Iterator[Service]:
    """The service, whose login answers carry a token."""
    with Service(extra={"/login/": {"token": TOKEN_FROM_LOGIN}}) as svc:
        yield svc


def run(tmp: Path, service: Service, text: str, *args: str, **env: str) -> tuple[int, str]:
    path = tmp / "shop.yaml"
    path.write_text(text)
    result = cli(
        *args,
        env={
            "BASE": service.url,
            "PASSWORD": PASSWORD,
            "NO_COLOR": "1",
            "SAGACTL_JOURNAL": str(tmp / "j.db"),
            **env,
        },
    )
    return result.exit_code, result.stdout + result.stderr


def every_byte(tmp: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp.iterdir() if p.name.startswith("j.db"))


def test_auth_sends_basic_and_bearer_and_nothing_of_them_shows(
    tmp_path: Path, service: Service
) -> None:
    service.faults.append(Fault("PUT", "/ship/", status=400))
    code, out = run(
        tmp_path, service, login_saga(safe=True), "run", str(tmp_path / "shop.yaml"), "-v"
    )
    assert code == 1, out  # ship failed: the order was undone
    login = service.requests("PUT", "/login/")[0]
    assert (
        login.headers["Authorization"]
        == "Basic " + base64.b64encode(f"shop:{PASSWORD}".encode()).decode()
    )
    order = service.requests("PUT", "/order/")[0]
    assert order.headers["Authorization"] == f"Bearer {TOKEN_FROM_LOGIN}"
    # The login's answer held the token: nothing of it, or of the password, shows anywhere.
    for secret in (
        PASSWORD,
        TOKEN_FROM_LOGIN,
        base64.b64encode(f"shop:{PASSWORD}".encode()).decode(),
    ):
        assert secret not in out and secret.encode() not in every_byte(tmp_path), secret
    with open_journal(tmp_path / "j.db") as store:
        run_id = store.list_runs()[0].id
        assert store.steps(run_id)[("login", "action")].outputs == {
            "token": {"withheld": "held a secret"}
        }


def stuck_undoing_the_order(tmp: Path, service: Service, text: str) -> str:
    """Run `text` to a stuck compensation (the order's undo keeps failing, after ship
    failed), then clear the faults; the run's id."""
    service.faults.append(Fault("DELETE", "/order/", status=500, times=None))
    service.faults.append(Fault("PUT", "/ship/", status=400))
    code, out = run(tmp, service, text, "run", str(tmp / "shop.yaml"))
    assert code == 3, out
    service.clear_faults()
    return out.splitlines()[0]


def undo_with_the_token(text: str) -> str:
    """The order is undone with the login's token, and ship can be undone."""
    text = text.replace(
        '    compensate: {method: DELETE, url: "/order/{{ run.id }}"}',
        '    compensate:\n      method: DELETE\n      url: "/order/{{ run.id }}"\n'
        '      auth: {bearer: "{{ steps.login.outputs.token }}"}',
    )
    return text.replace(
        '  - id: ship\n    action: {method: PUT, url: "/ship/{{ run.id }}"}',
        '  - id: ship\n    action: {method: PUT, url: "/ship/{{ run.id }}"}\n'
        '    compensate: {method: DELETE, url: "/ship/{{ run.id }}"}',
    )


def test_a_secret_output_needed_after_a_restart_is_read_anew_from_a_safe_step(
    tmp_path: Path, service: Service
) -> None:
    text = undo_with_the_token(login_saga(safe=True))
    run_id = stuck_undoing_the_order(tmp_path, service, text)
    code, out = run(tmp_path, service, text, "compensate", run_id)
    assert code == 0, out
    # The new process had no token: it logged in again (safe), then undid the order with it.
    assert len(service.requests("PUT", "/login/")) == 2
    undo = service.requests("DELETE", "/order/")[-1]
    assert undo.headers["Authorization"] == f"Bearer {TOKEN_FROM_LOGIN}"


def test_a_secret_output_of_a_step_that_is_not_safe_holds_the_run_stuck_saying_why(
    tmp_path: Path, service: Service
) -> None:
    text = undo_with_the_token(login_saga(safe=False))
    # Not safe: login has an effect of its own, undone by its own compensation.
    text = text.replace(
        "  - id: login\n",
        '  - id: login\n    compensate: {method: DELETE, url: "/login/{{ run.id }}"}\n',
    )
    run_id = stuck_undoing_the_order(tmp_path, service, text)
    code, out = run(tmp_path, service, text, "compensate", run_id)
    assert code == 3, out
    assert (
        "steps.login.outputs.token held a secret, so the journal did not keep it, and "
        "step login cannot be sent again to read it anew: it is not safe" in out
    )
    assert len(service.requests("PUT", "/login/")) == 1
    with open_journal(tmp_path / "j.db") as store:
        assert store.get_run(run_id).status is RunStatus.STUCK


def test_b64encode_builds_basic_credentials_by_hand_and_they_are_masked(
    tmp_path: Path, service: Service
) -> None:
    text = login_saga(safe=True).replace(
        '      auth: {basic: [shop, "{{ secrets.PASSWORD }}"]}',
        "      headers: {X-Auth: \"Basic {{ ('shop:' ~ secrets.PASSWORD) | b64encode }}\"}",
    )
    code, out = run(tmp_path, service, text, "run", str(tmp_path / "shop.yaml"), "-v")
    assert code == 0, out
    encoded = base64.b64encode(f"shop:{PASSWORD}".encode()).decode()
    assert service.requests("PUT", "/login/")[0].headers["X-Auth"] == f"Basic {encoded}"
    assert encoded not in out and encoded.encode() not in every_byte(tmp_path)
    assert "X-Auth: Basic ***" in out  # the part a secret made is masked, not the rest


def test_an_env_value_holding_a_secret_is_not_journaled_and_read_again(
    tmp_path: Path, service: Service
) -> None:
    text = """\
version: 1
name: envsecret
env: [BASE, DSN]
secrets: [PASSWORD]
defaults:
  retry: {attempts: 1}
  compensation: {retry: {attempts: 2, backoff: 10ms}}
steps:
  - id: a
    action: {method: PUT, url: "{{ env.BASE }}/a/{{ run.id }}", headers: {X-Dsn: "{{ env.DSN }}"}}
    compensate: {method: DELETE, url: "{{ env.BASE }}/a/{{ run.id }}"}
  - id: b
    action: {method: PUT, url: "{{ env.BASE }}/b/{{ run.id }}"}
"""
    dsn = f"postgresql://admin:{PASSWORD}@db/shop"
    service.faults += [
        Fault("PUT", "/b/", status=400),
        Fault("DELETE", "/a/", status=500, times=None),
    ]
    code, out = run(tmp_path, service, text, "run", str(tmp_path / "shop.yaml"), DSN=dsn)
    run_id = out.splitlines()[0]
    assert code == 3, out  # a's compensation keeps failing
    assert PASSWORD.encode() not in every_byte(tmp_path) and PASSWORD not in out
    service.clear_faults()
    code, out = run(tmp_path, service, text, "resume", run_id)  # DSN not set
    assert code == 2 and "env DSN held a secret, so the journal did not keep it" in out
    code, out = run(tmp_path, service, text, "resume", run_id, DSN=dsn)
    assert code == 1, out  # compensated, with the real DSN
    assert service.requests("PUT", "/a/")[0].headers["X-Dsn"] == dsn


def test_an_input_holding_a_secret_is_refused(tmp_path: Path, service: Service) -> None:
    text = """\
version: 1
name: input
secrets: [PASSWORD]
inputs: {note: {type: string}}
steps:
  - id: a
    action: {method: GET, url: "http://127.0.0.1:9/{{ inputs.note }}"}
"""
    code, out = run(
        tmp_path, service, text, "run", str(tmp_path / "shop.yaml"), "-i", f"note=x{PASSWORD}"
    )
    assert code == 2 and "input 'note' holds a secret's value" in out
    assert PASSWORD not in out and service.received == []
    assert not (tmp_path / "j.db").exists() or PASSWORD.encode() not in every_byte(tmp_path)


def test_validate_refuses_a_name_in_env_and_secrets_and_other_mistakes(
    tmp_path: Path, service: Service
) -> None:
    text = """\
version: 1
name: bad
env: [BASE, TOKEN]
secrets: [TOKEN]
steps:
  - id: a
    safe: true
    action: {method: POST, url: "{{ env.BASE }}/a"}
    compensate: {method: DELETE, url: "{{ env.BASE }}/a"}
    outputs:
      t: {value: "{{ response.json.t }}", secret: "yes"}
"""
    code, out = run(tmp_path, service, text, "validate", str(tmp_path / "shop.yaml"))
    assert code == 2
    path = tmp_path / "shop.yaml"
    assert f"{path}:4:11: secrets[0]: TOKEN is declared both in env and in secrets" in out
    assert f"{path}:7:11: steps[0].safe: a safe step has no effect to undo" in out
    assert "steps[0].outputs.t: a secret output is {value: TEMPLATE, secret: true}" in out


def test_validate_warns_about_a_secret_too_short_to_mask_cleanly(
    tmp_path: Path, service: Service
) -> None:
    text = login_saga(safe=True)
    code, out = run(
        tmp_path, service, text, "validate", str(tmp_path / "shop.yaml"), PASSWORD="abc"
    )
    assert code == 0
    assert "warning:" in out and "secret PASSWORD is 3 characters long" in out
    assert "abc" not in out.replace("***", "")  # the warning never quotes it


def test_a_safe_step_is_read_only(tmp_path: Path, service: Service) -> None:
    code, out = run(
        tmp_path, service, login_saga(safe=True), "validate", str(tmp_path / "shop.yaml")
    )
    assert code == 0 and "login  read-only" in out, out
    code, out = run(
        tmp_path, service, login_saga(safe=False), "validate", str(tmp_path / "shop.yaml")
    )
    assert "login  pivot" in out, out
    assert os.environ.get("PASSWORD") is None


def test_a_secret_output_is_masked_even_when_its_step_fails_its_checks(
    tmp_path: Path, service: Service
) -> None:
    """The token is read before `expect.that` judges the answer: failing the check, the
    answer that holds it is journaled and shown with it masked."""
    text = login_saga(safe=True).replace(
        '      auth: {basic: [shop, "{{ secrets.PASSWORD }}"]}',
        '      auth: {basic: [shop, "{{ secrets.PASSWORD }}"]}\n'
        "      expect: {that: [\"response.json.role == 'admin'\"]}",
    )
    code, out = run(tmp_path, service, text, "run", str(tmp_path / "shop.yaml"), "-v")
    assert code == 1, out
    assert TOKEN_FROM_LOGIN not in out and TOKEN_FROM_LOGIN.encode() not in every_byte(tmp_path)


def test_an_answer_whose_secret_output_cannot_be_read_is_not_kept(tmp_path: Path) -> None:
    """The token is in the answer, but the output reads a field that is not there: what
    the secret is cannot be known, so the answer is not journaled or shown at all."""
    with Service(extra={"/login/": {"tok": TOKEN_FROM_LOGIN}}) as service:
        code, out = run(
            tmp_path, service, login_saga(safe=True), "run", str(tmp_path / "shop.yaml"), "-v"
        )
    assert code == 1, out
    assert TOKEN_FROM_LOGIN not in out and TOKEN_FROM_LOGIN.encode() not in every_byte(tmp_path)
    assert "withheld: this answer holds a secret output that could not be read" in out


def test_a_long_secret_is_masked_before_a_message_is_cut_short(
    tmp_path: Path, service: Service
) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9." + "x" * 300 + ".sig"
    text = """\
version: 1
name: long
secrets: [JWT]
env: [BASE]
steps:
  - id: a
    action:
      method: PUT
      url: "{{ env.BASE }}/a/{{ run.id }}"
      json: {echo: "{{ secrets.JWT }}"}
      expect: {that: ["response.json.echo == 'other'"]}
    compensate: {method: DELETE, url: "{{ env.BASE }}/a/{{ run.id }}"}
  - id: b
    action: {method: GET, url: "htp://svc/x?token={{ secrets.JWT }}"}
"""
    code, out = run(tmp_path, service, text, "run", str(tmp_path / "shop.yaml"), JWT=jwt)
    assert code == 2 and "only http and https URLs can be sent" in out, out
    assert "x" * 40 not in out
    text = text.replace("htp://svc/x?token=", "{{ env.BASE }}/b?t=")
    code, out = run(tmp_path, service, text, "run", str(tmp_path / "shop.yaml"), JWT=jwt)
    assert code == 1 and 'actual "***" (str)' in out, out
    assert "x" * 40 not in out and ("x" * 40).encode() not in every_byte(tmp_path)


def test_a_value_built_with_a_secret_masks_the_secret_not_its_neighbours(
    tmp_path: Path, service: Service
) -> None:
    text = """\
version: 1
name: built
secrets: [PASSWORD]
env: [BASE]
inputs: {user: {type: string}}
steps:
  - id: a
    action:
      method: PUT
      url: "{{ env.BASE }}/a/{{ run.id }}"
      json: "{{ {'user': inputs.user, 'password': secrets.PASSWORD, 'mode': 'login'} }}"
    outputs: {user: "{{ response.json.user }}"}
"""
    code, out = run(
        tmp_path, service, text, "run", str(tmp_path / "shop.yaml"), "-v", "-i", "user=alice-smith"
    )
    assert code == 0, out
    assert '"user": "alice-smith"' in out and '"mode": "login"' in out
    assert PASSWORD not in out
    with open_journal(tmp_path / "j.db") as store:
        run_id = store.list_runs()[0].id
        assert store.steps(run_id)[("a", "action")].outputs == {"user": "alice-smith"}


def test_a_safe_step_sent_again_that_fails_is_failed_not_in_doubt(
    tmp_path: Path, service: Service
) -> None:
    text = undo_with_the_token(login_saga(safe=True))
    run_id = stuck_undoing_the_order(tmp_path, service, text)
    service.faults.append(Fault("PUT", "/login/", status=401, times=None))
    code, out = run(tmp_path, service, text, "compensate", run_id)
    assert code == 3, out
    assert "step login, sent again to read steps.login.outputs.token anew: status 401" in out
    with open_journal(tmp_path / "j.db") as store:
        assert store.steps(run_id)[("login", "action")].state.value == "failed"
