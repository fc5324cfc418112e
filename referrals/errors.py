"""The error tree. One root; domain, peer and inbound errors below it (DESIGN.md "Errors")."""

from __future__ import annotations


class RefloopError(Exception):
    """Root of every error Refloop raises on purpose."""


class DomainError(RefloopError):
    """A rule of the referral domain was broken."""


class IllegalTransition(DomainError):
    """The lifecycle forbids this action in the referral's current stage."""

    def __init__(self, action: str, stage: str, why: str) -> None:
        self.action = action
        self.stage = stage
        self.why = why
        super().__init__(f"cannot {action} a referral in stage {stage!r}: {why}")


class ConflictError(DomainError):
    """Optimistic concurrency: somebody saved a newer version first."""

    def __init__(self, what: str, expected: int, found: int | None) -> None:
        self.expected = expected
        self.found = found
        seen = "" if found is None else f", found {found}"
        super().__init__(
            f"{what} was changed by someone else (expected version {expected}{seen}); "
            "reload it and try again"
        )


class NotFound(DomainError):
    """The thing asked for is not in the store."""


class PeerError(RefloopError):
    """A peer (FHIR server, payer, MLLP partner) failed or timed out."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


class InboundError(RefloopError):
    """Bad input from outside; carries what to tell the sender and, when known, where in the
    input the problem is (`expression`, a FHIRPath-like path such as `Bundle.entry[0].resource`,
    or a parameter name)."""

    def __init__(self, message: str, *, code: str = "invalid", status: int = 400,
                 expression: str | None = None) -> None:
        self.code = code
        self.status = status
        self.expression = expression
        super().__init__(message)


class RetryLater(RefloopError):
    """A work handler asks to be run again later without counting it as a failure of the input."""

    def __init__(self, message: str, *, delay_seconds: float = 30.0) -> None:
        self.delay_seconds = delay_seconds
        super().__init__(message)
