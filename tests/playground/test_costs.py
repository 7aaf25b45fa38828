"""The cost of one request, worked by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.playground.costs import (
    CostBasis,
    cost_per_1m_tokens,
    foundry_request_cost,
    kaito_request_cost,
)


def test_a_foundry_request_costs_its_tokens_at_the_price_times_the_factor() -> None:
    # Phi-4 at $0.125 in / $0.50 out per 1M, Data Zone (x 1.1): 1,000 in and 500 out tokens are
    # (1000 x 0.125 + 500 x 0.5) / 1e6 = $0.000375, x 1.1 = $0.0004125.
    cost = foundry_request_cost(
        input_tokens=1000,
        output_tokens=500,
        input_per_1m=Decimal("0.125"),
        output_per_1m=Decimal("0.50"),
        factor=Decimal("1.1"),
    )
    assert cost == Decimal("0.0004125")
    # per 1M tokens (in + out): 0.0004125 x 1e6 / 1500 = $0.275
    assert cost_per_1m_tokens(cost=cost, tokens=1500) == Decimal("0.275")


def test_a_kaito_request_costs_its_share_of_node_hours() -> None:
    # 1.8 s on two Standard_NC24ads_A100_v4 nodes at $3.673/h: 1.8 x 3.673 x 2 / 3600 = $0.003673
    cost = kaito_request_cost(e2e_seconds=Decimal("1.8"), price_per_hour=Decimal("3.673"), nodes=2)
    assert cost == Decimal("0.003673")
    assert cost_per_1m_tokens(cost=cost, tokens=1500) == pytest.approx(Decimal("2.448666667"))


def test_at_higher_concurrency_a_request_shares_the_nodes() -> None:
    cost = kaito_request_cost(
        e2e_seconds=Decimal("1.8"), price_per_hour=Decimal("3.673"), nodes=2, concurrency=4
    )
    assert cost == Decimal("0.00091825")  # a quarter of 0.003673
    with pytest.raises(ValueError, match="at least 1"):
        kaito_request_cost(
            e2e_seconds=Decimal(1), price_per_hour=Decimal(1), nodes=1, concurrency=0
        )


def test_no_tokens_means_no_cost_per_million() -> None:
    assert cost_per_1m_tokens(cost=Decimal("0.01"), tokens=0) is None


def test_a_cost_basis_prices_a_request_by_its_kind() -> None:
    per_token = CostBasis(
        basis=CostBasis.PER_TOKEN,
        input_per_1m=Decimal("0.40"),
        output_per_1m=Decimal("1.60"),
        factor=Decimal("1.1"),
    )
    # (2000 x 0.40 + 250 x 1.60) / 1e6 x 1.1 = 0.0012 x 1.1 = $0.00132
    assert per_token.request_cost(input_tokens=2000, output_tokens=250, e2e_seconds=3.0) == Decimal(
        "0.00132"
    )
    assert per_token.effective_output_per_1m == Decimal("1.760")

    per_hour = CostBasis(basis=CostBasis.PER_HOUR, price_per_hour=Decimal("3.2"), nodes=1)
    # 0.45 s x $3.2/h / 3600 = $0.0004
    assert per_hour.request_cost(input_tokens=10, output_tokens=10, e2e_seconds=0.45) == Decimal(
        "0.0004"
    )
    assert (
        CostBasis(basis=CostBasis.NONE).request_cost(
            input_tokens=1, output_tokens=1, e2e_seconds=1.0
        )
        is None
    )


def test_a_cost_basis_survives_its_json_snapshot() -> None:
    basis = CostBasis(
        basis=CostBasis.PER_TOKEN, input_per_1m=Decimal("0.125"), output_per_1m=Decimal("0.5")
    )
    assert CostBasis.from_json(basis.as_json()) == basis
    assert "× 1" in basis.describe()
