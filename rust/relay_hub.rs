//! The native stream relay: once a stream's first event is out, its upstream socket is read and
//! its client socket written here, with no Python call per event.
//!
//! Through uvloop, each relayed event costs a read callback into `ProtocolCore.data_received`
//! (a bytes object, a context switch), a call to the stream's `send_bytes` and one to the
//! transport's `write`: ~5 µs of interpreter and loop work an event, about a quarter of the
//! gateway's CPU at 1,000 paced streams. Here one epoll set per event loop holds the upstream
//! sockets of the streams being relayed; uvloop watches only that set's descriptor
//! (`loop.add_reader(hub.fileno(), hub.poll)`), so one callback serves every event that is
//! ready, and each is one `read` and one `writev` (size line, event, CRLF) in Rust.
//!
//! Python keeps the decisions. It starts a relay after the first event (the transports paused
//! for reading, nothing queued for the client), and gets one `done(outcome, detail)` call at
//! the end: the body complete, the upstream closed, a response that does not parse, the client
//! gone, or a cancel (its timers, the client's disconnect, the drain deadline). Bytes the
//! client socket does not take at once wait here, and the upstream is not read while more
//! than `HIGH_WATER` wait (a slow client slows its upstream, not the gateway's memory); what
//! still waits at the end goes to the transport's `write`, in order, before `done` runs.
use std::collections::HashMap;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use pyo3::exceptions::PyOSError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::PyTraverseError;
use rustix::event::epoll;
use rustix::io::Errno;

use crate::exchange::Exchange;
use crate::front::py::{FrontCore, Stream};
use crate::front::response::chunk_size_line;
use crate::protocol::ProtocolCore;

/// The body is complete.
pub const RELAY_DONE: u8 = 0;
/// The client socket failed a write or hung up.
pub const RELAY_CLIENT_GONE: u8 = 1;
/// The upstream closed its side (or reset): Python ends the exchange as `connection_lost` does.
pub const RELAY_UPSTREAM_EOF: u8 = 2;
/// The upstream's bytes do not parse; `detail` says why.
pub const RELAY_INVALID: u8 = 3;
/// Python cancelled the relay.
pub const RELAY_CANCELLED: u8 = 4;

/// Bytes waiting for a slow client past which the upstream is not read.
const HIGH_WATER: usize = 1 << 20;
const READ_SIZE: usize = 64 * 1024;
const EVENTS: usize = 256;
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
const UPSTREAM: u64 = 0;
const CLIENT: u64 = 1;

/// The client side of a relay: its socket, and what the socket has not taken yet.
struct ClientOut {
    fd: OwnedFd,
    chunked: bool,
    /// Framed bytes the client socket has not taken yet, from `waiting_from` on.
    waiting: Vec<u8>,
    waiting_from: usize,
}

struct Relay {
    upstream: OwnedFd,
    client: ClientOut,
    exchange: Py<Exchange>,
    core: Py<ProtocolCore>,
    writer: Py<PyAny>,
    done: Py<PyAny>,
    reading: bool,
    client_watched: bool,
    front: Py<FrontCore>,
    seq: u64,
    /// The last chunk went with the last event: the front must not write it again.
    body_ended: bool,
}

struct Ended {
    relay: Relay,
    outcome: u8,
    detail: Option<String>,
}

enum Write {
    Taken,
    Waiting,
    Gone,
}

fn dup(fd: i32) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyOSError::new_err("no socket descriptor"));
    }
    // SAFETY: Python's transport owns `fd` and keeps it open for this call, which runs on the
    // loop thread with the GIL held: nothing can close it before the duplicate exists. The
    // relay keeps only the duplicate, so a transport closed later never leaves it holding a
    // number that another socket reuses.
    #[allow(unsafe_code)]
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_dupfd_cloexec(borrowed, 0).map_err(|e| PyOSError::new_err(e.to_string()))
}

fn os_error(e: Errno) -> PyErr {
    PyOSError::new_err(e.to_string())
}

impl ClientOut {
    fn new(fd: OwnedFd, chunked: bool) -> Self {
        ClientOut {
            fd,
            chunked,
            waiting: Vec::new(),
            waiting_from: 0,
        }
    }

    /// Write `data` to the client (as one chunk when chunked), or queue it behind what waits;
    /// `last` (chunked only) adds the body's last chunk in the same write.
    fn send(&mut self, data: &[u8], last: bool) -> Write {
        let mut line = [0; 18];
        let (head, tail): (&[u8], &[u8]) = if self.chunked && !data.is_empty() {
            (chunk_size_line(data.len(), &mut line), b"\r\n")
        } else {
            (b"", b"")
        };
        let end: &[u8] = if last && self.chunked {
            LAST_CHUNK
        } else {
            b""
        };
        let total = head.len() + data.len() + tail.len() + end.len();
        let mut taken = 0;
        if self.waiting_from == self.waiting.len() {
            let parts = [
                IoSlice::new(head),
                IoSlice::new(data),
                IoSlice::new(tail),
                IoSlice::new(end),
            ];
            match rustix::io::writev(&self.fd, &parts) {
                Ok(n) => taken = n,
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(_) => return Write::Gone,
            }
            if taken == total {
                return Write::Taken;
            }
            self.waiting.clear();
            self.waiting_from = 0;
        }
        let mut at = 0;
        for part in [head, data, tail, end] {
            let skip = taken.saturating_sub(at).min(part.len());
            self.waiting.extend_from_slice(&part[skip..]);
            at += part.len();
        }
        Write::Waiting
    }

    /// Write what waits; true once nothing does.
    fn flush(&mut self) -> Result<bool, ()> {
        while self.waiting_from < self.waiting.len() {
            match rustix::io::write(&self.fd, &self.waiting[self.waiting_from..]) {
                Ok(n) => self.waiting_from += n,
                Err(Errno::AGAIN) => return Ok(false),
                Err(Errno::INTR) => {}
                Err(_) => return Err(()),
            }
        }
        self.waiting.clear();
        self.waiting_from = 0;
        Ok(true)
    }

    fn waiting_len(&self) -> usize {
        self.waiting.len() - self.waiting_from
    }
}

#[pyclass(module = "sluicegate._native")]
pub struct RelayHub {
    epoll: OwnedFd,
    relays: HashMap<u64, Relay>,
    next_id: u64,
    buf: Vec<u8>,
}

impl RelayHub {
    /// Stop watching a relay's sockets; its descriptors close when it drops.
    fn unwatch(&self, relay: &Relay) {
        // Delete before the duplicates close: the set holds the socket, not the number, and
        // Python's descriptor keeps the socket open.
        let _ = epoll::delete(&self.epoll, relay.upstream.as_fd());
        if relay.client_watched {
            let _ = epoll::delete(&self.epoll, relay.client.fd.as_fd());
        }
    }

    fn end(&mut self, id: u64, outcome: u8, detail: Option<String>, ended: &mut Vec<Ended>) {
        if let Some(relay) = self.relays.remove(&id) {
            self.unwatch(&relay);
            ended.push(Ended {
                relay,
                outcome,
                detail,
            });
        }
    }

    /// The upstream socket of relay `id` is readable (or closed).
    fn upstream_ready(&mut self, py: Python<'_>, id: u64, ended: &mut Vec<Ended>) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        let n = match rustix::io::read(&relay.upstream, &mut self.buf[..]) {
            Ok(0) | Err(Errno::CONNRESET) => return self.end(id, RELAY_UPSTREAM_EOF, None, ended),
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => return,
            Err(e) => return self.end(id, RELAY_UPSTREAM_EOF, Some(e.to_string()), ended),
        };
        if let Ok(mut core) = relay.core.bind(py).try_borrow_mut() {
            core.touch();
        }
        // Python holds neither while this callback runs; if it ever did, end, do not panic.
        let Ok(mut exchange) = relay.exchange.bind(py).try_borrow_mut() else {
            let detail = Some("the exchange is in use".to_owned());
            return self.end(id, RELAY_INVALID, detail, ended);
        };
        let core = exchange.core_mut();
        if let Err(e) = core.feed(&self.buf[..n]) {
            drop(exchange);
            return self.end(id, RELAY_INVALID, Some(e.0), ended);
        }
        let out = core.out();
        let done = core.done();
        // A complete Anthropic message: nothing follows from Python (it adds an error event
        // only to a stream that ended without message_stop), so the last chunk goes now.
        let last = done && relay.client.chunked && core.tally().message_stop;
        let written = if out.is_empty() && !last {
            Write::Taken
        } else {
            relay.client.send(out, last)
        };
        relay.body_ended = last;
        drop(exchange);
        match written {
            Write::Gone => return self.end(id, RELAY_CLIENT_GONE, None, ended),
            Write::Waiting if !relay.client_watched => {
                let data = epoll::EventData::new_u64(id << 1 | CLIENT);
                let flags = epoll::EventFlags::OUT;
                if epoll::add(&self.epoll, relay.client.fd.as_fd(), data, flags).is_err() {
                    return self.end(id, RELAY_CLIENT_GONE, None, ended);
                }
                relay.client_watched = true;
            }
            _ => {}
        }
        if done {
            return self.end(id, RELAY_DONE, None, ended);
        }
        if relay.reading && relay.client.waiting_len() > HIGH_WATER {
            relay.reading = false;
            let data = epoll::EventData::new_u64(id << 1 | UPSTREAM);
            let flags = epoll::EventFlags::empty();
            let _ = epoll::modify(&self.epoll, relay.upstream.as_fd(), data, flags);
        }
    }

    /// The client socket of relay `id` takes bytes again (or failed).
    fn client_ready(&mut self, id: u64, flags: epoll::EventFlags, ended: &mut Vec<Ended>) {
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        if flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
            return self.end(id, RELAY_CLIENT_GONE, None, ended);
        }
        match relay.client.flush() {
            Err(()) => self.end(id, RELAY_CLIENT_GONE, None, ended),
            Ok(false) => {}
            Ok(true) => {
                relay.client_watched = false;
                let resume = !relay.reading;
                relay.reading = true;
                let _ = epoll::delete(&self.epoll, relay.client.fd.as_fd());
                if resume {
                    let fd = relay.upstream.as_fd();
                    let data = epoll::EventData::new_u64(id << 1 | UPSTREAM);
                    if epoll::modify(&self.epoll, fd, data, epoll::EventFlags::IN).is_err() {
                        self.end(id, RELAY_UPSTREAM_EOF, None, ended);
                    }
                }
            }
        }
    }
}

/// Hand what still waits to the transport, then tell Python how the relay ended.
fn report(py: Python<'_>, ended: Vec<Ended>) -> PyResult<()> {
    let mut first_error = None;
    for e in ended {
        let Ended {
            relay,
            mut outcome,
            detail,
        } = e;
        if relay.client.waiting_len() > 0 && outcome != RELAY_CLIENT_GONE {
            let out = &relay.client;
            let rest = PyBytes::new(py, &out.waiting[out.waiting_from..]);
            if relay.writer.bind(py).call1((rest,)).is_err() && outcome == RELAY_DONE {
                outcome = RELAY_CLIENT_GONE;
            }
        }
        if relay.body_ended && outcome == RELAY_DONE {
            // Not borrowed now: this runs from the hub's callback, between Python's calls.
            if let Ok(mut front) = relay.front.bind(py).try_borrow_mut() {
                front.body_ended(relay.seq);
            }
        }
        let done = relay.done.clone_ref(py);
        drop(relay);
        if let Err(err) = done.bind(py).call1((outcome, detail)) {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[pymethods]
impl RelayHub {
    #[new]
    fn new() -> PyResult<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(os_error)?;
        Ok(RelayHub {
            epoll,
            relays: HashMap::new(),
            next_id: 1,
            buf: vec![0; READ_SIZE],
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for r in self.relays.values() {
            visit.call(&r.exchange)?;
            visit.call(&r.core)?;
            visit.call(&r.writer)?;
            visit.call(&r.done)?;
            visit.call(&r.front)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        for (_, r) in self.relays.drain() {
            let _ = epoll::delete(&self.epoll, r.upstream.as_fd());
        }
    }

    /// The epoll set's descriptor, for `loop.add_reader`.
    fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.epoll.as_raw_fd()
    }

    /// Relay the rest of `exchange`'s body from the socket `upstream_fd` to `stream`'s client.
    /// Returns the relay's id, or None when the stream cannot be written directly (Python then
    /// relays it itself). `done(outcome, detail)` is called once, from `poll` or `cancel`.
    fn start(
        &mut self,
        py: Python<'_>,
        core: Py<ProtocolCore>,
        exchange: Py<Exchange>,
        stream: &Bound<'_, Stream>,
        upstream_fd: i32,
        done: Py<PyAny>,
    ) -> PyResult<Option<u64>> {
        let Some(target) = stream.get().splice_target(py)? else {
            return Ok(None);
        };
        let relay = Relay {
            upstream: dup(upstream_fd)?,
            client: ClientOut::new(dup(target.fd)?, target.chunked),
            exchange,
            core,
            writer: target.writer,
            done,
            reading: true,
            client_watched: false,
            front: target.front,
            seq: target.seq,
            body_ended: false,
        };
        let id = self.next_id;
        self.next_id += 1;
        let data = epoll::EventData::new_u64(id << 1 | UPSTREAM);
        epoll::add(
            &self.epoll,
            relay.upstream.as_fd(),
            data,
            epoll::EventFlags::IN,
        )
        .map_err(os_error)?;
        self.relays.insert(id, relay);
        Ok(Some(id))
    }

    /// End relay `id` now (its `done` gets RELAY_CANCELLED); nothing when it already ended.
    fn cancel(slf: &Bound<'_, Self>, id: u64) -> PyResult<()> {
        let mut ended = Vec::new();
        slf.borrow_mut().end(id, RELAY_CANCELLED, None, &mut ended);
        // The hub is not borrowed while Python runs: `done` may start or cancel relays.
        report(slf.py(), ended)
    }

    /// uvloop's reader callback: serve every socket that is ready.
    fn poll(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut ended = Vec::new();
        {
            let mut this = slf.borrow_mut();
            let this = &mut *this;
            let mut events = [MaybeUninit::<epoll::Event>::uninit(); EVENTS];
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let ready = match epoll::wait(&this.epoll, &mut events, Some(&zero)) {
                Ok((ready, _)) => &*ready,
                Err(Errno::INTR) => &[],
                Err(e) => return Err(os_error(e)),
            };
            for ev in ready {
                let key = ev.data.u64();
                let flags = ev.flags;
                if key & 1 == UPSTREAM {
                    this.upstream_ready(py, key >> 1, &mut ended);
                } else {
                    this.client_ready(key >> 1, flags, &mut ended);
                }
            }
        }
        report(py, ended)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RelayHub>()?;
    m.add("RELAY_DONE", RELAY_DONE)?;
    m.add("RELAY_CLIENT_GONE", RELAY_CLIENT_GONE)?;
    m.add("RELAY_UPSTREAM_EOF", RELAY_UPSTREAM_EOF)?;
    m.add("RELAY_INVALID", RELAY_INVALID)?;
    m.add("RELAY_CANCELLED", RELAY_CANCELLED)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    fn pair() -> (OwnedFd, OwnedFd) {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        socketpair(AddressFamily::UNIX, SocketType::STREAM, flags, None).unwrap()
    }

    fn drain(fd: &OwnedFd, into: &mut Vec<u8>) {
        let mut buf = vec![0; 1 << 16];
        while let Ok(n) = rustix::io::read(fd, &mut buf[..]) {
            if n == 0 {
                break;
            }
            into.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn chunks_that_the_socket_does_not_take_wait_and_go_out_in_order() {
        let (ours, theirs) = pair();
        let mut out = ClientOut::new(ours, true);
        let event = vec![b'x'; 10_000];
        let mut expected = Vec::new();
        let mut waited = false;
        for i in 0..200u8 {
            let mut e = event.clone();
            e[0] = i;
            // The last one carries the body's last chunk, queued behind the rest.
            let written = out.send(&e, i == 199);
            assert!(!matches!(written, Write::Gone), "the peer is open");
            waited |= matches!(written, Write::Waiting);
            expected.extend_from_slice(b"2710\r\n");
            expected.extend_from_slice(&e);
            expected.extend_from_slice(b"\r\n");
        }
        expected.extend_from_slice(b"0\r\n\r\n");
        assert!(waited, "2 MB should overflow a socket pair's buffer");
        let mut got = Vec::new();
        while out.waiting_len() > 0 {
            drain(&theirs, &mut got);
            out.flush().unwrap();
        }
        drain(&theirs, &mut got);
        assert_eq!(got, expected);
    }

    #[test]
    fn close_delimited_streams_are_written_as_they_are() {
        let (ours, theirs) = pair();
        let mut out = ClientOut::new(ours, false);
        // No last chunk without chunked framing: the close ends the body.
        assert!(matches!(out.send(b"data: 1\n\n", true), Write::Taken));
        let mut got = Vec::new();
        drain(&theirs, &mut got);
        assert_eq!(got, b"data: 1\n\n");
    }

    #[test]
    fn the_last_chunk_goes_with_the_last_event_or_alone() {
        let (ours, theirs) = pair();
        let mut out = ClientOut::new(ours, true);
        assert!(matches!(out.send(b"data: 1\n\n", true), Write::Taken));
        assert!(matches!(out.send(b"", true), Write::Taken));
        let mut got = Vec::new();
        drain(&theirs, &mut got);
        assert_eq!(got, b"9\r\ndata: 1\n\n\r\n0\r\n\r\n0\r\n\r\n");
    }

    #[test]
    fn a_peer_that_closed_is_gone() {
        let (ours, theirs) = pair();
        drop(theirs);
        let mut out = ClientOut::new(ours, true);
        assert!(matches!(out.send(b"data: 1\n\n", false), Write::Gone));
    }
}
