"""Whether the ledger may write SQLite through the native extension (rust/ledger.rs).

Only on the very SQLite library Python's sqlite3 module runs on. Two copies of SQLite in one
process must not open the same database file: POSIX locks belong to the process, so closing
the file in one copy drops the locks the other holds, and another process may then write under
the first one's feet. The extension links the system's shared library; Python is usually built
against the same one, but some builds embed their own (python-build-standalone, for one). The
test is exact: both must resolve `sqlite3_libversion` to the same address.
"""

from __future__ import annotations

import ctypes
import functools

from .. import _native


@functools.cache
def shared_sqlite() -> bool:
    """True when `_native` and the sqlite3 module run on one copy of SQLite."""
    try:
        import _sqlite3

        module = ctypes.CDLL(_sqlite3.__file__)  # already loaded: dlopen returns its handle
        # dlsym on the module's handle searches it and then the libraries it was linked with.
        address = ctypes.cast(module.sqlite3_libversion, ctypes.c_void_p).value
    except (ImportError, AttributeError, OSError):
        return False
    return address == _native.sqlite_libversion_address()
