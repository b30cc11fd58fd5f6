"""What a pipeline did, said the same way everywhere: the run names that say what each run
is, the summary printed to the terminal, and the run's description in the MLflow UI
(``mlflow.note.content``, Markdown) with the tags a person filters by.

Names: ``pipeline model=knn C=0.5`` (the overrides, each key shortened to its last
part and each path to its file name), ``train``, ``serialize``, ``package_pyfunc``,
``evaluate v7``, ``sweep 6 jobs``, ``job model=knn``, ``score batch.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.contracts import ui_run_page, ui_version_page
from pipeline import graph

NAME_LIMIT = 120  # characters of a run name; the UI's runs table shows about that


def shorten(overrides: Sequence[str]) -> str:
    """``model=knn model.n_neighbors=3 data.path=/srv/a/batch.csv`` as
    ``model=knn n_neighbors=3 path=batch.csv``."""
    parts = []
    for override in overrides:
        key, equals, value = override.partition("=")
        if equals:
            key = key.lstrip("+~").rsplit(".", 1)[-1]
            value = value.strip("'\"")
            value = value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value
            override = f"{key}={value}"
        parts.append(override)
    text = " ".join(parts)
    return text if len(text) <= NAME_LIMIT else text[: NAME_LIMIT - 1] + "…"


def named(kind: str, overrides: Sequence[str] = ()) -> str:
    """``kind`` followed by the shortened overrides: ``pipeline model=knn``, ``job C=0.1``."""
    from core.secrets import redact

    shown = redact(shorten(overrides))
    return f"{kind} {shown}" if shown else kind


def step_run_name(step: str, outputs: Mapping[str, str]) -> str:
    """``evaluate v7`` for the evaluation of registered version 7; otherwise the step's name."""
    version = outputs.get("registered_model_version")
    return f"{step} v{version}" if step == "evaluate" and version else step


def model_class(model_cfg: Mapping) -> str:
    """The estimator's class from its config, without building it: the ``_target_``'s last
    part, or for a scikit-learn ``Pipeline`` that of its final step (``LogisticRegression``)."""
    target = str(model_cfg.get("_target_", ""))
    steps = model_cfg.get("steps")
    if target.endswith(".Pipeline") and steps:
        last = steps[-1]
        final = last[-1] if isinstance(last, Sequence) and not isinstance(last, str) else last
        if isinstance(final, Mapping):
            return model_class(final)
    return target.rsplit(".", 1)[-1] or "unknown"


@dataclass
class StepResult:
    step: str
    run_id: str | None = None
    seconds: float = 0.0
    status: str = "NOT RUN"  # FINISHED, CACHED, FAILED
    cache: str = ""  # hit or miss
    reason: str = ""
    error: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    name: str = ""  # the run's name (``evaluate v7``); the step's own when empty

    @property
    def shown(self) -> str:
        return self.name or self.step


@dataclass
class PipelineSummary:
    run_id: str
    steps: list[StepResult] = field(default_factory=list)
    registered_model_version: str | None = None
    validation_status: str = "not run"
    gate_outcome: str | None = None
    champion_version: str | None = None
    broken_champion_version: str | None = None  # the champion the gate found it could not load
    columns_left_out: str | None = None  # by train's column profile: "rownames (identifier), ..."
    name: str = "pipeline"  # the run's name

    @property
    def succeeded(self) -> bool:
        return len(self.steps) == len(graph.STEPS) and all(s.status in ("FINISHED", "CACHED") for s in self.steps)

    @property
    def unchanged(self) -> bool:
        return self.succeeded and all(s.status == "CACHED" for s in self.steps)

    @property
    def outcome_word(self) -> str:
        """One word to filter by: promoted, challenger, rolled_back, not_gated, unchanged, failed."""
        if not self.succeeded:
            return "failed"
        if self.unchanged:
            return "unchanged"
        return (self.gate_outcome or "not gated").replace(" ", "_")

    @property
    def outcome(self) -> str:
        failed = [s for s in self.steps if s.status == "FAILED"]
        if failed:
            return f"failed at step {failed[0].step}: {failed[0].error}"
        if not self.succeeded:
            return "failed before " + (f"step {self.steps[-1].step} finished" if self.steps else "any step ran")
        if self.unchanged:
            return f"nothing changed: every step cached; champion is version {self.champion_version}"
        broken = self.broken_champion_version
        if self.gate_outcome == "promoted":
            replaced = f", replacing version {broken}, which is broken (see its tags)" if broken else ""
            return f"promoted version {self.registered_model_version} to champion{replaced}"
        if self.gate_outcome == "not gated":
            version = self.registered_model_version
            return f"validated {f'version {version}' if version else 'the model (not registered)'}; not gated"
        return (
            f"kept champion version {self.champion_version}{', which is broken' if broken else ''}; "
            f"version {self.registered_model_version} is {self.gate_outcome}"
        )

    def render(self) -> str:
        """The summary for the terminal."""
        lines = [f"{self.name} (run {self.run_id})"]
        for step in self.steps:
            lines.append(
                f"  {step.shown:<15} {step.status:<9} {step.seconds:6.1f}s  run {step.run_id or '-'}"
                f"  {step.cache} ({step.reason})"
            )
        if self.columns_left_out:
            lines.append(f"  columns left out: {self.columns_left_out}")
        lines.append(f"  registered version: {self.registered_model_version or '-'}")
        lines.append(f"  validation: {self.validation_status}")
        lines.append(f"  outcome: {self.outcome}")
        return "\n".join(lines)

    def markdown(self, experiment_id: str, model_name: str, trigger: str, headline: str | None = None) -> str:
        """The summary as the run's description in the MLflow UI, with links to the step
        runs and the registered version (the UI's own routes); ``headline``: the outcome
        sentence, when the run's is more than this summary's (a sweep's)."""

        def run_link(run_id: str | None) -> str:
            return f"[{run_id[:8]}]({ui_run_page(experiment_id, run_id)})" if run_id else "-"

        version = self.registered_model_version
        lines = [
            f"**{self.outcome_word.replace('_', ' ')}**: {_escape(headline or self.outcome)}",
            "",
            "| step | status | cache | why | seconds | run |",
            "|---|---|---|---|---:|---|",
            *(
                f"| {s.shown} | {s.status} | {s.cache or '-'} | {_escape(s.error or s.reason) or '-'} "
                f"| {s.seconds:.1f} | {run_link(s.run_id)} |"
                for s in self.steps
            ),
            "",
            "Registered version: "
            + (f"[{model_name} v{version}]({ui_version_page(model_name, version)})" if version else "none")
            + f" · validation: {self.validation_status} · trigger: {trigger}",
        ]
        if self.columns_left_out:
            lines += ["", f"Columns left out by the profile: {_escape(self.columns_left_out)}"]
        return "\n".join(lines)


def _escape(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no column breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")
