"""What tokens cost: a price per million input and output tokens for each model, from the config.

Why integers: budgets count money in micro-units (millionths of the currency) so sums are exact
(``egress.budgets``). Prices are kept as integer micro-units per million tokens, a cost is
``tokens * price / 1_000_000`` in integer arithmetic, rounded **up** to a whole micro-unit (a
reservation is never smaller than the cost it covers).

Model names match exactly, or by a pattern ending in ``*`` (``gpt-4o*`` covers
``gpt-4o-2024-08-06``); the longest pattern wins. A model no entry covers gets ``default`` when the
config gives one, else no price: the caller refuses the call (an unpriced model would be a
budget hole).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from portcullis.llm.usage import TokenUsage

__all__ = ["MICRO", "ModelPrice", "PriceTable"]

MICRO = 1_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Micro-units of currency per million tokens. Cache prices default to the input price."""

    input_micros: int
    output_micros: int
    cache_read_micros: int | None = None
    cache_write_micros: int | None = None

    @classmethod
    def per_million(cls, input_per_million: float, output_per_million: float, *,
                    cache_read_per_million: float | None = None,
                    cache_write_per_million: float | None = None) -> ModelPrice:
        """From currency units per million tokens, as the config and the providers' price pages write them."""
        def micros(value: float | None) -> int | None:
            if value is None:
                return None
            if value < 0:
                raise ValueError("prices cannot be negative")
            return round(value * MICRO)
        return cls(micros(input_per_million) or 0, micros(output_per_million) or 0,
                   micros(cache_read_per_million), micros(cache_write_per_million))

    def cost_micros(self, usage: TokenUsage) -> int:
        """What ``usage`` costs, in micro-units, rounded up."""
        read = min(usage.cache_read_tokens, usage.input_tokens)
        write = min(usage.cache_write_tokens, usage.input_tokens - read)
        plain = usage.input_tokens - read - write
        total = (plain * self.input_micros + usage.output_tokens * self.output_micros
                 + read * (self.input_micros if self.cache_read_micros is None else self.cache_read_micros)
                 + write * (self.input_micros if self.cache_write_micros is None else self.cache_write_micros))
        return _ceil_div(total, MICRO)

    def most_micros(self, input_tokens: int, output_tokens: int) -> int:
        """The most ``input_tokens`` of prompt and ``output_tokens`` of answer can cost, whatever
        the cache does (each prompt token at the dearest of the input prices): what a reservation holds."""
        dearest = max(self.input_micros, self.cache_read_micros or 0, self.cache_write_micros or 0)
        return _ceil_div(input_tokens * dearest + output_tokens * self.output_micros, MICRO)


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by model name (exact, or a ``prefix*`` pattern), and an optional default."""

    exact: Mapping[str, ModelPrice]
    prefixes: tuple[tuple[str, ModelPrice], ...]  # longest first
    default: ModelPrice | None = None

    @classmethod
    def build(cls, prices: Mapping[str, ModelPrice], default: ModelPrice | None = None) -> PriceTable:
        exact = {name: p for name, p in prices.items() if not name.endswith("*")}
        prefixes = sorted(((name[:-1], p) for name, p in prices.items() if name.endswith("*")),
                          key=lambda item: -len(item[0]))
        return cls(exact, tuple(prefixes), default)

    def price(self, model: str | None) -> ModelPrice | None:
        """The model's price, the default for a model no entry covers, or None (refuse the call)."""
        if model is not None:
            found = self.exact.get(model)
            if found is not None:
                return found
            for prefix, price in self.prefixes:
                if model.startswith(prefix):
                    return price
        return self.default
