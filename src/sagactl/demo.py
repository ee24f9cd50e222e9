"""`sagactl demo`: three small services on 127.0.0.1 — inventory, pricing, search — and the
bundled add-product saga run against them: once succeeding, once with search rejecting the
product, so that a commit and a compensation in reverse order can be watched.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO

from sagactl.events import Event
from sagactl.journal import Journal
from sagactl.records import RunStatus
from sagactl.testing.service import Fault, Service

__all__ = [
    "DEMO_TOKEN",
    "SERVICES",
    "DemoFaults",
    "bundled_saga",
    "demo_environment",
    "demo_services",
    "run_demo",
    "saga_argument",
    "serve_instructions",
]

SERVICES = ("inventory", "pricing", "search")
DEMO_TOKEN = "demo-token"
# What each service adds to its answers, as a real one would.
_EXTRA = {"inventory": {"/reservations": {"reserved": True, "available": 42}}}
# The path each service's requests go to, for fault injection.
_PATHS = {"inventory": "/reservations", "pricing": "/prices", "search": "/index"}


@dataclass
class DemoFaults:
    """Misbehaving services: `fail` rejects every action, `flaky` answers 503 twice, `slow`
    takes longer than the saga's 5 s attempt timeout once, after doing the work, `stuck`
    refuses to undo anything (409): a run that must be undone goes stuck."""

    fail: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.fail or self.flaky or self.slow or self.stuck)

    def apply(self, name: str, service: Service) -> None:
        path = _PATHS[name]
        if name in self.fail:
            service.faults.append(
                Fault(
                    "PUT",
                    path,
                    status=422,
                    times=None,
                    body={"error": f"{name} rejects this request"},
                )
            )
        if name in self.flaky:
            service.faults.append(
                Fault(
                    "PUT", path, status=503, times=2, body={"error": f"{name} is busy, try again"}
                )
            )
        if name in self.slow:
            service.faults.append(Fault("PUT", path, kind="delay_after", delay=6.0, times=1))
        if name in self.stuck:
            service.faults.append(
                Fault(
                    "DELETE",
                    path,
                    status=409,
                    times=None,
                    body={"error": f"{name} cannot undo this: it is locked"},
                )
            )


def bundled_saga() -> Path:
    """The add-product saga shipped with sagactl."""
    return Path(str(resources.files("sagactl").joinpath("demo/add-product.yaml")))


def saga_argument() -> str:
    """How to name the bundled saga on a command line typed from here."""
    local = Path("sagas/add-product.yaml")
    if local.is_file() and local.resolve() == bundled_saga().resolve():
        return str(local)
    return shlex.quote(str(bundled_saga()))


@contextmanager
def demo_services(faults: DemoFaults | None = None) -> Iterator[dict[str, Service]]:
    """The three demo services, each on its own random port of 127.0.0.1."""
    with ExitStack() as stack:
        started = {name: stack.enter_context(Service(extra=_EXTRA.get(name))) for name in SERVICES}
        for name, service in started.items():
            (faults or DemoFaults()).apply(name, service)
        yield started


def demo_environment(started: Mapping[str, Service]) -> dict[str, str]:
    """The env and secret values the add-product saga reads."""
    return {
        **{f"{name.upper()}_URL": service.url for name, service in started.items()},
        "SHOP_TOKEN": DEMO_TOKEN,
    }


def run_demo(
    journal: Journal,
    faults: DemoFaults,
    out: IO[str],
    on_event: Callable[[Event], None],
    stop: threading.Event | None = None,
) -> int:
    """Run the bundled saga against the demo services; print what happened and what to try."""
    from sagactl.api import list_runs, start_run
    from sagactl.definition.inputs import resolve_inputs
    from sagactl.definition.loader import load
    from sagactl.output.run_views import format_list

    saga = load(bundled_saga())
    saga = dataclasses.replace(saga, path=saga_argument())
    title = "A run that succeeds: stock reserved, price set, product indexed."
    if faults.any():
        title = (
            "A run where "
            + "; ".join(
                f"{name} {what}"
                for names, what in [
                    (faults.fail, "rejects every action"),
                    (faults.flaky, "answers 503 twice"),
                    (faults.slow, "answers once after the attempt timeout"),
                    (faults.stuck, "refuses to undo anything"),
                ]
                for name in names
            )
            + "."
        )
    plan: list[tuple[str, Sequence[str], DemoFaults]] = [
        (title, ["sku=ABC-1", "price=9.5"], faults)
    ]
    if not faults.any():
        plan.append(
            (
                "A run where search rejects the product: what was done is undone.",
                ["sku=XYZ-2", "price=12"],
                DemoFaults(fail=["search"]),
            )
        )
    with demo_services() as started:
        out.write(
            "Demo services on 127.0.0.1: "
            + ", ".join(f"{name} {service.url}" for name, service in started.items())
            + "\n"
        )
        for number, (title, inputs, run_faults) in enumerate(plan, start=1):
            for name, service in started.items():
                service.clear_faults()
                run_faults.apply(name, service)
            out.write(f"\n{number}. {title}\n")
            out.flush()
            start_run(
                saga,
                resolve_inputs(saga, inputs),
                journal,
                {**os.environ, **demo_environment(started)},
                on_event=on_event,
                stop=stop,
            )
    runs = list_runs(journal, limit=len(plan))
    flag = f" --journal {shlex.quote(journal.location)}"
    out.write(f"\nThe runs, newest first (sagactl list{flag}):\n{format_list(runs)}\n")
    out.write(
        "\nTry next:\n"
        f"  sagactl show {runs[0][0].id}{flag}\n"
        "      every request and response of the last run\n"
        f"  sagactl report {' '.join(run.id for run, _ in reversed(runs))} -o demo.html{flag}\n"
        "      the same, with the step graph and a timeline, as one HTML page\n"
        "  sagactl demo --flaky search\n"
        "      search answers 503 twice: retried with the same Idempotency-Key\n"
        "  sagactl demo --slow inventory\n"
        "      inventory answers after the 5s timeout, having done the work: in doubt;\n"
        "      the retry is answered from the service's idempotency table\n"
        "  sagactl demo --fail pricing\n"
        "      pricing rejects the price: the reservation is released\n"
        "  sagactl demo --serve\n"
        "      keep the services up and run sagas against them yourself\n"
    )
    statuses = {run.status for run, _ in runs}
    return 0 if statuses <= {RunStatus.SUCCEEDED, RunStatus.COMPENSATED} else 3


def serve_instructions(started: Mapping[str, Service], journal: str | None) -> str:
    env = " ".join(f"{k}={v}" for k, v in demo_environment(started).items())
    where = f" --journal {shlex.quote(journal)}" if journal else ""
    return (
        "Demo services on 127.0.0.1:\n"
        + "".join(f"  {name:<9} {service.url}\n" for name, service in started.items())
        + "\nIn another shell:\n"
        f"  export {env}\n"
        f"  sagactl run {saga_argument()} -i sku=ABC-1 -i price=9.5{where}\n"
        "\nCtrl-C stops the services.\n"
    )
