"""sluicegate's own HTTP/1.1 front (`sluicegate serve --server native`): the worker's event
loop reads requests and writes answers itself, with no second I/O thread (see connection.py)."""
