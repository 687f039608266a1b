//! `sluicegate-loadgen mock`: a paced streaming upstream on one thread and one epoll set.
//!
//! It replays one pre-encoded answer (the head and first flush, then one chunk per event),
//! written by `loadtests/native_load.py` from sluicegate's own Python mock, so the bytes are
//! the ones `sluicegate mock-upstream` sends. Pacing comes from the request, as there:
//! `x-mock-interval-ms` between events and `x-mock-pause-after-first-ms` after the first.
//! Only streaming requests are answered (400 otherwise); `GET` answers 200 for readiness.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::net::{bind, listen, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};

use crate::response::find;

const LISTENER: u64 = u64::MAX;
const MAX_REQUEST: usize = 64 * 1024 * 1024;

pub struct Answer {
    pub first: Vec<u8>,
    pub rest: Vec<Vec<u8>>,
}

/// The answer file: records of a little-endian u32 length and that many bytes; the first
/// record is the head with the first flush, each later one is written on its own.
pub fn read_answer(path: &str) -> io::Result<Answer> {
    let data = std::fs::read(path)?;
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let len_bytes: [u8; 4] = data
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "truncated answer file"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let rec = data
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "truncated answer file"))?;
        records.push(rec.to_vec());
        at += 4 + len;
    }
    let mut it = records.into_iter();
    let first = it
        .next()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "empty answer file"))?;
    Ok(Answer {
        first,
        rest: it.collect(),
    })
}

struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    pending: Vec<u8>,
    /// Index of the next event chunk while an answer is being paced.
    next: Option<usize>,
    interval: Duration,
    generation: u64,
}

pub fn listener(host: &str, port: u16) -> io::Result<TcpListener> {
    let addr: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "bad host"))?;
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    bind(&fd, &addr)?;
    listen(&fd, 4096)?;
    Ok(TcpListener::from(fd))
}

/// When the next write of a paced answer is due. With a tick, due times are rounded up to
/// its multiples, so writes for many streams come in bursts, as from a timer wheel with that
/// resolution (uvloop's is 1 ms); without one, each stream's write comes at its own time.
struct Clock {
    start: Instant,
    tick: Duration,
}

impl Clock {
    fn due(&self, wait: Duration) -> Instant {
        let at = Instant::now() + wait;
        if self.tick.is_zero() {
            return at;
        }
        let tick = self.tick.as_nanos();
        let since = (at - self.start).as_nanos().div_ceil(tick) * tick;
        self.start + Duration::from_nanos(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

pub fn serve(listener: TcpListener, answer: Answer, tick: Duration) -> io::Result<()> {
    let clock = Clock {
        start: Instant::now(),
        tick,
    };
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &ep,
        listener.as_fd(),
        epoll::EventData::new_u64(LISTENER),
        epoll::EventFlags::IN,
    )?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut generation = 0u64;
    let mut timers: BinaryHeap<Reverse<(Instant, usize, u64)>> = BinaryHeap::new();
    let mut events = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let timeout = timers.peek().map(|Reverse((due, _, _))| {
            let d = due.saturating_duration_since(Instant::now());
            rustix::time::Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        });
        events.clear();
        match epoll::wait(
            &ep,
            rustix::buffer::spare_capacity(&mut events),
            timeout.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let key = ev.data.u64();
            if key == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(true)?;
                            stream.set_nodelay(true)?;
                            let id = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            generation += 1;
                            epoll::add(
                                &ep,
                                stream.as_fd(),
                                epoll::EventData::new_u64(id as u64),
                                epoll::EventFlags::IN,
                            )?;
                            conns[id] = Some(Conn {
                                stream,
                                inbuf: Vec::new(),
                                pending: Vec::new(),
                                next: None,
                                interval: Duration::ZERO,
                                generation,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // Out of descriptors or a connection reset before accept: go on serving.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let (id, flags, data) = (key as usize, ev.flags, ev.data);
            let Some(conn) = conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            let mut open = true;
            if flags.intersects(epoll::EventFlags::OUT) {
                open = flush(conn);
                if open && conn.pending.is_empty() {
                    let _ = epoll::modify(&ep, conn.stream.as_fd(), data, epoll::EventFlags::IN);
                }
            }
            if open
                && flags.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                )
            {
                open = read_all(conn, &mut buf);
                if open {
                    open = serve_buffered(conn, id, &answer, &mut timers, &clock);
                }
            }
            if open && !conn.pending.is_empty() {
                let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT;
                let _ = epoll::modify(&ep, conn.stream.as_fd(), data, flags);
            }
            if !open {
                conns[id] = None;
                free.push(id);
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((due, id, gen))) = timers.peek() {
            if due > now {
                break;
            }
            timers.pop();
            let Some(conn) = conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            if conn.generation != gen {
                continue;
            }
            let mut open = write_next(conn, &answer);
            if open && conn.next.is_some() {
                timers.push(Reverse((clock.due(conn.interval), id, gen)));
            } else if open {
                open = serve_buffered(conn, id, &answer, &mut timers, &clock);
            }
            if open && !conn.pending.is_empty() {
                let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT;
                let _ = epoll::modify(
                    &ep,
                    conn.stream.as_fd(),
                    epoll::EventData::new_u64(id as u64),
                    flags,
                );
            }
            if !open {
                conns[id] = None;
                free.push(id);
            }
        }
    }
}

/// Read what is there; false when the peer closed or the connection failed.
fn read_all(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                conn.inbuf.extend_from_slice(&buf[..n]);
                if conn.inbuf.len() > MAX_REQUEST {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn send(conn: &mut Conn, data: &[u8]) -> bool {
    if !conn.pending.is_empty() {
        conn.pending.extend_from_slice(data);
        return true;
    }
    let mut at = 0;
    while at < data.len() {
        match conn.stream.write(&data[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                conn.pending.extend_from_slice(&data[at..]);
                return true;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn flush(conn: &mut Conn) -> bool {
    let pending = std::mem::take(&mut conn.pending);
    send(conn, &pending)
}

fn write_next(conn: &mut Conn, answer: &Answer) -> bool {
    let Some(i) = conn.next else { return true };
    let open = answer.rest.get(i).is_none_or(|chunk| send(conn, chunk));
    conn.next = if i + 1 < answer.rest.len() && conn.interval > Duration::ZERO {
        Some(i + 1)
    } else {
        // Paused only after the first flush: the rest goes back to back.
        for chunk in answer.rest.iter().skip(i + 1) {
            if !send(conn, chunk) {
                return false;
            }
        }
        None
    };
    open
}

/// Answer the requests that have fully arrived, one at a time (the next waits for the stream).
fn serve_buffered(
    conn: &mut Conn,
    id: usize,
    answer: &Answer,
    timers: &mut BinaryHeap<Reverse<(Instant, usize, u64)>>,
    clock: &Clock,
) -> bool {
    while conn.next.is_none() {
        let Some(end) = find(&conn.inbuf, b"\r\n\r\n") else {
            return true;
        };
        let head = String::from_utf8_lossy(&conn.inbuf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let (mut length, mut interval_ms, mut pause_ms) = (0usize, 0f64, 0f64);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let Ok(n) = value.parse() else { return false };
                length = n;
            } else if name.eq_ignore_ascii_case("x-mock-interval-ms") {
                interval_ms = value.parse().unwrap_or(0.0);
            } else if name.eq_ignore_ascii_case("x-mock-pause-after-first-ms") {
                pause_ms = value.parse().unwrap_or(0.0);
            }
        }
        let start = end + 4;
        if conn.inbuf.len() < start + length {
            return true;
        }
        let body: Vec<u8> = conn.inbuf.drain(..start + length).skip(start).collect();
        if request_line.starts_with("GET ") {
            if !send(
                conn,
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n",
            ) {
                return false;
            }
            continue;
        }
        let streaming =
            find(&body, b"\"stream\":true").is_some() || find(&body, b"\"stream\": true").is_some();
        if !request_line.starts_with("POST ") || !streaming {
            let msg = br#"{"type":"error","error":{"type":"invalid_request_error","message":"the native mock answers streaming POST requests only"}}"#;
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                msg.len()
            );
            if !send(conn, head.as_bytes()) || !send(conn, msg) {
                return false;
            }
            continue;
        }
        if !send(conn, &answer.first) {
            return false;
        }
        let interval = Duration::from_secs_f64(interval_ms.max(0.0) / 1000.0);
        let pause = Duration::from_secs_f64(pause_ms.max(0.0) / 1000.0);
        if interval.is_zero() && pause.is_zero() {
            for chunk in &answer.rest {
                if !send(conn, chunk) {
                    return false;
                }
            }
            continue;
        }
        conn.interval = interval;
        conn.next = Some(0);
        let wait = if pause.is_zero() { interval } else { pause };
        timers.push(Reverse((clock.due(wait), id, conn.generation)));
    }
    true
}
