"""The project's exception types. Library errors are translated into these at the boundary."""

from __future__ import annotations


class V2xError(Exception):
    """Base of every error this package raises on purpose."""


class DecodeError(V2xError):
    """A payload is not a valid MessageFrame.

    `kind` names the class of fault, for counting in reports: "malformed" (not protobuf),
    "empty" (no body or no header), "oversize" (over the payload cap), "out_of_range" (a field outside the standard's range),
    "unavailable" (a required field holds the standard's n/a value).
    """

    def __init__(self, kind: str, message: str, field: str = "") -> None:
        self.kind = kind
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}" if field else message)

    def under(self, prefix: str) -> DecodeError:
        """The same fault, its field named from further up (`prefix.field`)."""
        return DecodeError(self.kind, self.detail, f"{prefix}.{self.field}" if self.field else prefix)


class ScenarioError(V2xError):
    """A scenario file is invalid. Each problem is one line `FILE:LINE: field.path: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class BrokerError(V2xError):
    """A broker could not be started, reached or used."""


def broker_error_in(exc: BaseException) -> BrokerError | None:
    """The first BrokerError in `exc` or, for an exception group (a TaskGroup's), in any exception it holds."""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = broker_error_in(inner)
            if found is not None:
                return found
    return None
