"""A model's inputs, and how two versions' inputs differ: read before the gate scores the
champion, so that a version trained on other columns is a decision (``core.gate``), not a
champion that cannot score the new holdout."""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

UNTYPED = "?"  # a column named in the model's metadata only, its type unknown


def model_inputs(signature, metadata: Mapping | None) -> dict[str, str] | None:
    """{column: type} a model takes: its signature's named input columns and their MLflow
    types, else the ``feature_names`` of its metadata (:data:`UNTYPED`); None when neither says."""
    inputs = getattr(signature, "inputs", None)
    if inputs is not None and inputs.has_input_names():
        return {spec.name: getattr(spec.type, "name", str(spec.type)) for spec in inputs.inputs}
    names = (metadata or {}).get("feature_names")
    return dict.fromkeys(names, UNTYPED) if names else None


def input_difference(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> str | None:
    """How ``new`` inputs differ from ``old`` ones (``added 'c' (string); removed 'b' (long);
    retyped 'a' (long -> double)``), or None when they agree or either is unknown."""
    if old is None or new is None:
        return None
    added = [f"{name!r} ({kind})" for name, kind in new.items() if name not in old]
    removed = [f"{name!r} ({kind})" for name, kind in old.items() if name not in new]
    retyped = [
        f"{name!r} ({old[name]} -> {kind})"
        for name, kind in new.items()
        if name in old and UNTYPED not in (kind, old[name]) and kind != old[name]
    ]
    parts = [
        f"{what} {', '.join(names)}"
        for what, names in (("added", added), ("removed", removed), ("retyped", retyped))
        if names
    ]
    return "; ".join(parts) or None


def schema_change(champion_uri: str, model) -> str | None:
    """How loaded pyfunc ``model``'s inputs differ from those of the model at ``champion_uri``
    (read from its MLmodel file, not loaded). None when they agree, or when the champion's
    cannot be read: scoring it then tells whether it is broken."""
    from mlflow.models import get_model_info

    try:
        info = get_model_info(champion_uri)
    except Exception as err:  # noqa: BLE001 - unreadable here: the champion's scoring decides
        log.warning("could not read the inputs of %s: %s: %s", champion_uri, type(err).__name__, err)
        return None
    metadata = model.metadata
    return input_difference(
        model_inputs(info.signature, info.metadata), model_inputs(metadata.signature, metadata.metadata)
    )
