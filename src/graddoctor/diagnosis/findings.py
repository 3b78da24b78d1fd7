"""Finding and Diagnosis: what the rules say about a run, as data that prints and serialises.

The JSON form follows the Findings contract of DESIGN.md: `{version, findings, layers}` where each
finding is `{kind, severity, layers, step_range, evidence, cause, remedies}`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any, Mapping

from .._version import __version__
from ..remedies.catalog import comparable, get_remedy
from .render import render_text


class Severity(str, enum.Enum):
    """How bad a finding is. `error`: training cannot work this way; `warning`: it is hurt; `info`: worth knowing."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __str__(self) -> str:
        return self.value


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


class Kind(str, enum.Enum):
    """What a finding is about. A kind never changes meaning; new kinds may be added."""

    VANISHING_GRADIENT = "vanishing_gradient"
    EXPLODING_GRADIENT = "exploding_gradient"
    DEAD_UNITS = "dead_units"
    SATURATED_UNITS = "saturated_units"
    NONFINITE = "nonfinite"
    STALLED_UPDATES = "stalled_updates"
    VANISHING_THROUGH_TIME = "vanishing_through_time"
    EXPLODING_THROUGH_TIME = "exploding_through_time"
    LARGE_UPDATES = "large_updates"
    ACTIVATION_GROWTH = "activation_growth"
    ATTENTION_LOGIT_GROWTH = "attention_logit_growth"
    ATTENTION_ENTROPY_COLLAPSE = "attention_entropy_collapse"
    LOSS_SPIKE = "loss_spike"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Advice:
    """A ranked remedy in a finding: the catalog's id and title, and why it fits this evidence."""

    id: str
    title: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "why": self.why}


def advise(remedy_id: str, why: str) -> Advice:
    """An `Advice` for a catalog remedy (KeyError for an id that is not in the catalog)."""
    remedy = get_remedy(remedy_id)
    return Advice(remedy.id, remedy.title, why)


Evidence = Mapping[str, float | int | str]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One named problem: where (layers, steps), the numbers that triggered it, its cause, what to try.

    Attributes:
        kind: what it is about.
        severity: info, warning or error.
        layers: layer names involved, input side first.
        step_range: (first, last) recorded optimizer step the evidence comes from, or None.
        evidence: flat mapping of the numbers that triggered the finding.
        cause: sentences written from the evidence.
        remedies: ranked, most promising first.
        comparable: the remedy ids `compare` can try side by side (ids only; a renderer writes the
            call or command line, e.g. `graddoctor compare` in the CLI).
    """

    kind: Kind
    severity: Severity
    layers: tuple[str, ...]
    step_range: tuple[int, int] | None
    evidence: Evidence
    cause: str
    remedies: tuple[Advice, ...] = ()

    @property
    def comparable(self) -> tuple[str, ...]:
        return comparable([a.id for a in self.remedies])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "severity": str(self.severity),
            "layers": list(self.layers),
            "step_range": list(self.step_range) if self.step_range is not None else None,
            "evidence": {k: json_number(v) for k, v in self.evidence.items()},
            "cause": self.cause,
            "remedies": [a.to_dict() for a in self.remedies],
        }


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Findings about one run, worst first, with a per-layer summary.

    Attributes:
        run: name, status, steps and layer count of the diagnosed run.
        findings: worst severity first.
        layers: one summary dict per layer, input side first.
        notes: how the run was obtained or read (e.g. "random inputs"), shown with the findings.
        expected: mean-field theory's per-layer gradient factors next to the measured ones at the
            first recorded step (`diagnosis.expected.Expectation`), when a prediction was given.
    """

    run: Mapping[str, Any]
    findings: tuple[Finding, ...]
    layers: tuple[Mapping[str, Any], ...]
    notes: tuple[str, ...] = ()
    expected: Any = None
    guard_actions: tuple[Mapping[str, Any], ...] = ()  # what a guard did while training (docs/guards.md)

    @property
    def kinds(self) -> set[str]:
        """The kinds found, as strings."""
        return {str(f.kind) for f in self.findings}

    @property
    def worst(self) -> Severity | None:
        """The highest severity among the findings (None when there is none)."""
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=None)

    def reaches(self, level: Severity | str) -> bool:
        """True when a finding is at least as severe as `level` (what `--fail-on` tests)."""
        rank = Severity(level).rank
        return any(f.severity.rank >= rank for f in self.findings)

    def of_kind(self, kind: Kind | str) -> list[Finding]:
        return [f for f in self.findings if str(f.kind) == str(kind)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "run": {k: json_number(v) for k, v in self.run.items()},
            "notes": list(self.notes),
            "findings": [f.to_dict() for f in self.findings],
            # Kept beside the findings (whose keys are the contract's): per finding, the remedy ids
            # `compare` can try (the CLI writes them as a command line).
            "compare": [list(f.comparable) for f in self.findings],
            "layers": [{k: json_number(v) for k, v in layer.items()} for layer in self.layers],
            **({"theory": _json_tree(self.expected.to_dict())} if self.expected is not None else {}),
            "guard_actions": [_json_tree(a) for a in self.guard_actions],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The Findings JSON of DESIGN.md. Non-finite numbers are the strings "nan", "inf", "-inf"."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def __str__(self) -> str:
        return render_text(self)  # remedies to compare as a graddoctor.compare(...) call; the CLI writes its own


def _json_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_tree(v) for v in value]
    return json_number(value)


def json_number(value: Any) -> Any:
    """A JSON-safe value: NaN and infinities become strings (never dropped), numpy scalars plain numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [json_number(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
