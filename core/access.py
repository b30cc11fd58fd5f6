"""A tracking server's refusals, said in one line: a permission the account lacks (HTTP 403,
``PERMISSION_DENIED``) or credentials it does not take (401, ``UNAUTHENTICATED``).

MLflow's basic-auth server (``mlflow server --app-name basic-auth``; docs/operations.md,
Accounts) answers such a request with a bare ``Permission denied``, and MLflow's client raises
it with its traceback. Every command here ends through :func:`explained` instead: one line on
stderr naming the account (``MLFLOW_TRACKING_USERNAME``, never a password or token), the
permission it lacks (READ, EDIT or MANAGE, as MLflow 3.17's server asks them), the object
(the experiment or registered model, by name) and what was refused; exit :data:`EXIT_DENIED`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

EXIT_DENIED = 77  # sysexits EX_NOPERM

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"

STATUS_OF_CODE = {"PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401}
ENDPOINT = re.compile(r"API request to endpoint (\S+) failed")
# Removing a tag of a run, an experiment or a registered model is an update (EDIT); any other
# removal (an alias, a version's tag, a version) asks for MANAGE.
EDIT_REMOVALS = ("registered-models/delete-tag", "runs/delete-tag", "experiments/delete-tag")
REGISTRY_PATHS = ("/registered-models/", "/model-versions/")


@dataclass(frozen=True)
class Refusal:
    """What the server refused: its status (401 or 403), the endpoint, and the MLflow client
    call that made the request (``set_model_version_tag``), when it can be told."""

    status: int
    endpoint: str
    call: str | None

    @property
    def permission(self) -> str:
        """The permission MLflow 3.17's basic-auth server asks for this request."""
        call, path = self.call or "", self.endpoint.rstrip("/")
        last = path.rsplit("/", 1)[-1]
        if call.startswith(("get_", "search_", "list_", "download")) or call in ("GET", "HEAD"):
            return "READ"
        if path.endswith(EDIT_REMOVALS):
            return "EDIT"
        if call.startswith("delete_") or call == "DELETE" or (not call and last.startswith("delete")):
            return "MANAGE"
        if not call and last.startswith(("get", "search", "list")):
            return "READ"
        return "EDIT"

    @property
    def on_registry(self) -> bool:
        return any(part in self.endpoint for part in REGISTRY_PATHS)


def refusal_of(err: BaseException | None) -> Refusal | None:
    """The server's 401 or 403 behind ``err`` (it, or what caused it), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        found = _refusal(err)
        if found is not None:
            return found
        err = err.__cause__ or err.__context__
    return None


def _refusal(err: BaseException) -> Refusal | None:
    response = getattr(err, "response", None)  # requests' HTTPError: an artifact upload or download
    status = getattr(response, "status_code", None)
    if status in (401, 403) and response is not None:
        from urllib.parse import urlsplit

        request = getattr(response, "request", None)
        return Refusal(status, urlsplit(response.url or "").path, getattr(request, "method", None))
    status = STATUS_OF_CODE.get(str(getattr(err, "error_code", "")))
    if status is None:
        return None
    found = ENDPOINT.search(str(getattr(err, "message", err)))
    return Refusal(status, found.group(1) if found else "", _client_call(err))


def _client_call(err: BaseException) -> str | None:
    """The last public function of MLflow's stores the request went through (the traceback's)."""
    calls = [
        frame.name
        for frame in traceback.extract_tb(err.__traceback__)
        if f"{os.sep}mlflow{os.sep}store{os.sep}" in frame.filename and not frame.name.startswith("_")
    ]
    return calls[-1] if calls else None


def model_name(model_uri: str) -> str | None:
    """The registered model a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` names."""
    body = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else ""
    return body.rpartition("@")[0] or body.rpartition("/")[0] or None


def account() -> str:
    """Who the requests are sent as, never the secret: the user name, or that a token is used."""
    name = os.environ.get(USERNAME_ENV)
    if name:
        return f"account {name!r}"
    if os.environ.get(TOKEN_ENV):
        return f"the account of the token in {TOKEN_ENV}"
    return f"no account ({USERNAME_ENV} is not set)"


def explain(err: BaseException, experiment: str | None = None, model: str | None = None) -> str | None:
    """One line for the 401 or 403 behind ``err`` (None if there is none), naming the account,
    the permission, the object (``experiment`` or ``model`` by name, as the command knows them)
    and the request refused."""
    refusal = refusal_of(err)
    if refusal is None:
        return None
    call, endpoint = refusal.call or "a request", refusal.endpoint or "its endpoint unknown"
    if call.isupper():  # an HTTP method: an artifact upload or download
        request = f"{call} {endpoint} (HTTP {refusal.status})"
    else:
        request = f"{call} ({endpoint}, HTTP {refusal.status})"
    if refusal.status == 401:
        sent = os.environ.get(USERNAME_ENV) or os.environ.get(TOKEN_ENV)
        return (
            f"not authenticated: the tracking server did not accept the credentials of {account()} for "
            f"{request}; {'check' if sent else 'set'} {USERNAME_ENV} and {PASSWORD_ENV} (or {TOKEN_ENV})"
        )
    if "/webhooks" in refusal.endpoint:  # MLflow 3.17 lets only admins create or list webhooks
        return (
            f"permission denied: {account()} is not an admin, and only an admin manages webhooks; "
            f"the tracking server refused {request}"
        )
    if refusal.on_registry:
        target = f"registered model {model!r}" if model else "the registered model"
    else:
        target = f"experiment {experiment!r}" if experiment else "the experiment"
    return (
        f"permission denied: {account()} lacks {refusal.permission} on {target}; the tracking server refused {request}"
    )


REFUSED_PREFIXES = ("permission denied: ", "not authenticated: ")  # how explain's lines begin


def refused_step(steps) -> str | None:
    """For a pipeline whose step failed on a refusal (its recorded error one of
    :func:`explain`'s lines): ``step <name>: <that line>``; else None."""
    for step in steps:
        if step.status == "FAILED" and (step.error or "").startswith(REFUSED_PREFIXES):
            return f"step {step.step}: {step.error}"
    return None


@contextlib.contextmanager
def explained(
    prog: str, experiment: str | None = None, model: str | None = None, after: str = "", needs: str = ""
) -> Iterator[None]:
    """Around what a command does: a 401 or 403 from the tracking server ends the command with
    :func:`explain`'s line on stderr and exit :data:`EXIT_DENIED`, then what the command
    ``needs`` in all (``MANAGE on registered model 'x'``) and ``after`` (``nothing changed``), or
    instead the notes the error carries (``core.registry.apply_change`` says whether it undid its
    change). Any other error goes on as it is."""
    try:
        yield
    except Exception as err:
        line = explain(err, experiment, model)
        if line is None:
            raise
        notes = "; ".join(note for e in _chain(err) for note in getattr(e, "__notes__", ()))
        tail = [f"{prog} needs {needs}"] if needs else []
        tail += [notes or after] if notes or after else []
        print("; ".join([f"{prog}: {line}", *tail]), file=sys.stderr, flush=True)
        sys.exit(EXIT_DENIED)


def _chain(err: BaseException | None) -> list[BaseException]:
    found: list[BaseException] = []
    while err is not None and err not in found:
        found.append(err)
        err = err.__cause__ or err.__context__
    return found
