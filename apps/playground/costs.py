"""What one request costs, on Foundry (per token) and on KAITO (per node-hour).

Foundry bills tokens: ``input x input $/1M + output x output $/1M``, times the deployment type's
price factor (Global 1.0, Data Zone 1.1, Regional per model), over 1,000,000. Reasoning tokens are
output tokens and are billed as such (they are in the server's ``completion_tokens``).

KAITO bills nothing per token: you pay for the GPU nodes by the hour whether they answer or idle.
A request's cost is its share of node-hours, ``E2E seconds x $/hour x nodes / 3600``, under the
assumption that the deployment serves this one request at a time (concurrency 1). At concurrency
``c`` with continuous batching each request holds the nodes for about the same time but shares them
with ``c - 1`` others, so its share is divided by ``c``; pass ``concurrency`` to say so. The
figure therefore is an upper bound for a busy deployment and the true cost of an idle one.

Money is Decimal throughout; nothing is rounded here (templates round for display).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

ONE_MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)


def foundry_request_cost(
    *,
    input_tokens: int,
    output_tokens: int,
    input_per_1m: Decimal,
    output_per_1m: Decimal,
    factor: Decimal = Decimal(1),
) -> Decimal:
    """Tokens x price per 1M x the deployment type's factor."""
    return (input_tokens * input_per_1m + output_tokens * output_per_1m) * factor / ONE_MILLION


def kaito_request_cost(
    *, e2e_seconds: Decimal, price_per_hour: Decimal, nodes: int, concurrency: int = 1
) -> Decimal:
    """The request's share of node-hours: E2E s x $/hour x nodes / 3600 / concurrency."""
    if concurrency < 1:
        raise ValueError("concurrency is at least 1")
    return e2e_seconds * price_per_hour * nodes / SECONDS_PER_HOUR / concurrency


def cost_per_1m_tokens(*, cost: Decimal, tokens: int) -> Decimal | None:
    """Cost scaled to one million tokens; None when no token was counted."""
    if tokens <= 0:
        return None
    return cost * ONE_MILLION / tokens


@dataclass(frozen=True)
class CostBasis:
    """How a target is priced: per token (Foundry) or per node-hour (KAITO), or not at all.

    Kept as a snapshot with each sample, so a run's cost stays what it was when it ran even after
    someone edits the target's prices.
    """

    PER_TOKEN = "per_token"  # noqa: S105 (a basis, not a secret)
    PER_HOUR = "per_hour"
    NONE = "none"

    basis: str
    input_per_1m: Decimal | None = None
    output_per_1m: Decimal | None = None
    factor: Decimal = Decimal(1)
    price_per_hour: Decimal | None = None  # one node's $/hour
    nodes: int = 1

    @property
    def effective_input_per_1m(self) -> Decimal | None:
        return None if self.input_per_1m is None else self.input_per_1m * self.factor

    @property
    def effective_output_per_1m(self) -> Decimal | None:
        return None if self.output_per_1m is None else self.output_per_1m * self.factor

    @property
    def cluster_price_per_hour(self) -> Decimal | None:
        return None if self.price_per_hour is None else self.price_per_hour * self.nodes

    @property
    def complete(self) -> bool:
        if self.basis == self.PER_TOKEN:
            return self.input_per_1m is not None and self.output_per_1m is not None
        if self.basis == self.PER_HOUR:
            return self.price_per_hour is not None
        return False

    def request_cost(
        self,
        *,
        input_tokens: int | None,
        output_tokens: int | None,
        e2e_seconds: float | None,
        concurrency: int = 1,
    ) -> Decimal | None:
        """The cost of one request, or None where the basis or the measurement lacks a number."""
        if not self.complete:
            return None
        if self.basis == self.PER_TOKEN:
            if input_tokens is None or output_tokens is None:
                return None
            assert self.input_per_1m is not None and self.output_per_1m is not None
            return foundry_request_cost(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                input_per_1m=self.input_per_1m,
                output_per_1m=self.output_per_1m,
                factor=self.factor,
            )
        if e2e_seconds is None:
            return None
        assert self.price_per_hour is not None
        return kaito_request_cost(
            e2e_seconds=Decimal(str(e2e_seconds)),
            price_per_hour=self.price_per_hour,
            nodes=self.nodes,
            concurrency=concurrency,
        )

    def describe(self) -> str:
        """The cost basis in one line, for the run page."""
        if self.basis == self.PER_TOKEN and self.complete:
            assert self.input_per_1m is not None and self.output_per_1m is not None
            return (
                f"${_money(self.input_per_1m)} in / ${_money(self.output_per_1m)} out per 1M "
                f"tokens × {_money(self.factor)} (deployment type factor)"
            )
        if self.basis == self.PER_HOUR and self.complete:
            assert self.price_per_hour is not None
            nodes = f"{self.nodes} node{'s' if self.nodes != 1 else ''}"
            return (
                f"{nodes} × ${_money(self.price_per_hour)}/hour; this request's share of node "
                "time, serving one request at a time"
            )
        return "Not priced: set the target's cost basis."

    def as_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CostBasis:
        def dec(name: str) -> Decimal | None:
            value = data.get(name)
            return None if value in (None, "") else Decimal(str(value))

        return cls(
            basis=str(data.get("basis") or cls.NONE),
            input_per_1m=dec("input_per_1m"),
            output_per_1m=dec("output_per_1m"),
            factor=dec("factor") or Decimal(1),
            price_per_hour=dec("price_per_hour"),
            nodes=int(data.get("nodes") or 1),
        )


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f")
