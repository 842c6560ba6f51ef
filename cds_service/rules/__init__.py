"""Rules step: pure functions of the facts. Why did a card fire? The answer is in this package, one module per domain.

Rule ids are those of shared/clinical/rules.md. Each rule returns ``Finding``s naming the card definition
(cards/cards.toml), the evidence behind it, and what to suggest; ``select`` applies the card contract.
"""

from __future__ import annotations

from .base import DetailLine, Finding, Line, Suggest, WellsResult
from .select import RuleBook, evaluate

__all__ = ["DetailLine", "Finding", "Line", "RuleBook", "Suggest", "WellsResult", "evaluate"]
