"""Usage accounting: one record per request, priced, queued and written off the request path."""

from .ledger import BY_COLUMNS, Ledger, NullLedger
from .pricing import Price, cost_usd, normalize_openai
from .record import UsageRecord

__all__ = ["BY_COLUMNS", "Ledger", "NullLedger", "Price", "UsageRecord", "cost_usd", "normalize_openai"]
