"""Router-issued keys: the token format and the key store (SQLite or PostgreSQL)."""

from .store import KeyEntry, KeyStore
from .tokens import hash_token, key_id_of, make_token, parse_token, redact, verify

__all__ = ["KeyEntry", "KeyStore", "hash_token", "key_id_of", "make_token", "parse_token", "redact", "verify"]
