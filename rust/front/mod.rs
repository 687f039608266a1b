//! The front: sluicegate's own HTTP/1.1 server, an asyncio protocol on the worker's event loop.
//!
//! With Granian, every event of a stream crosses from the event loop to Granian's I/O thread,
//! which writes it: a second thread on the same core, woken for each batch of sends. Here the
//! loop thread that reads an event from the upstream writes it to the client socket itself, as
//! nginx does. `parse` and `response` are plain Rust; `py` is the PyO3 face: the connection's
//! per-byte work (`FrontCore`), and the request the app sees as both RSGI scope and protocol.
pub mod parse;
pub mod py;
pub mod response;
