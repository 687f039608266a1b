"""Built-in providers that answer without a network upstream."""
