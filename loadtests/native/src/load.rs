//! `sluicegate-loadgen load`: the closed-loop load generator of `loadtests/loadgen.py`, on one
//! thread and one epoll set, for the paced-stream sweep where the Python one saturates its core.
//!
//! The same rules as `loadgen.run_scenario`: `concurrency` users, each on one keep-alive
//! connection sending requests back to back until the window ends; users start spread over
//! the ramp; latency figures cover requests started inside the window that finished inside
//! it; throughput counts those that finished inside it. It prints `start` and `end` at the
//! window edges (the benchmark samples CPU times there), then one JSON object of results.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{connect, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};

use crate::response::Response;

pub struct Plan {
    pub addr: SocketAddr,
    pub request: Vec<u8>,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub ramp: Duration,
    pub timeout: Duration,
}

#[derive(Default)]
struct Results {
    ttfb: Vec<f64>,
    ttfe: Vec<f64>,
    total: Vec<f64>,
    gaps: Vec<f64>,
    ok: u64,
    events: u64,
    completed_in_window: u64,
    errors: BTreeMap<String, u64>,
}

enum State {
    /// Not started yet, or waiting to reconnect.
    Idle {
        at: Instant,
    },
    Connecting,
    Busy,
    Finished,
}

struct User {
    state: State,
    sock: Option<OwnedFd>,
    sent: usize,
    resp: Response,
    t0: Instant,
    t_head: Option<Instant>,
    t_first: Option<Instant>,
    last: Instant,
    events: u32,
    in_window: bool,
}

struct Run<'a> {
    plan: &'a Plan,
    ep: OwnedFd,
    users: Vec<User>,
    res: Results,
    ws: Instant,
    we: Instant,
}

pub fn run(plan: &Plan) -> io::Result<()> {
    let start = Instant::now();
    let ws = start + plan.warmup;
    let we = ws + plan.duration;
    let hard_end = we + plan.timeout + plan.ramp + Duration::from_secs(5);
    let n = plan.concurrency.max(1);
    let users = (0..n)
        .map(|i| User {
            state: State::Idle {
                at: start + plan.ramp.mul_f64(i as f64 / n as f64),
            },
            sock: None,
            sent: 0,
            resp: Response::new(),
            t0: start,
            t_head: None,
            t_first: None,
            last: start,
            events: 0,
            in_window: false,
        })
        .collect();
    let mut run = Run {
        plan,
        ep: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        users,
        res: Results::default(),
        ws,
        we,
    };
    let mut out = io::stdout().lock();
    let (mut said_start, mut said_end) = (false, false);
    let mut events = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_sweep = start;
    loop {
        let now = Instant::now();
        if !said_start && now >= ws {
            writeln!(out, "start")?;
            out.flush()?;
            said_start = true;
        }
        if !said_end && now >= we {
            writeln!(out, "end")?;
            out.flush()?;
            said_end = true;
        }
        if now >= next_sweep {
            run.sweep(now);
            next_sweep = now + Duration::from_millis(5);
        }
        if run.users.iter().all(|u| matches!(u.state, State::Finished)) {
            break;
        }
        if now >= hard_end {
            *run.res.errors.entry("run_timeout".into()).or_default() += 1;
            break;
        }
        let wake = next_sweep.min(if said_start { we } else { ws }).max(now);
        let d = wake - now;
        let timeout = rustix::time::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        };
        events.clear();
        match epoll::wait(
            &run.ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let (key, flags) = (ev.data.u64(), ev.flags);
            run.ready(key as usize, flags, &mut buf);
        }
    }
    if !said_end {
        writeln!(out, "end")?;
    }
    write_results(&mut out, &run.res)?;
    out.flush()
}

impl Run<'_> {
    /// Start users whose time has come, and fail requests past their timeout.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.users.len() {
            match self.users[i].state {
                State::Idle { at } if at <= now => {
                    if now >= self.we {
                        self.users[i].state = State::Finished;
                    } else {
                        self.open(i, now);
                    }
                }
                State::Busy | State::Connecting if now >= self.users[i].t0 + self.plan.timeout => {
                    self.fail(i, "timeout", now);
                }
                _ => {}
            }
        }
    }

    fn open(&mut self, i: usize, now: Instant) {
        let sock = match socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        ) {
            Ok(s) => s,
            Err(_) => return self.connect_failed(i, now),
        };
        let _ = sockopt::set_tcp_nodelay(&sock, true);
        match connect(&sock, &self.plan.addr) {
            Ok(()) | Err(Errno::INPROGRESS) => {}
            Err(_) => return self.connect_failed(i, now),
        }
        let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT;
        if epoll::add(
            &self.ep,
            sock.as_fd(),
            epoll::EventData::new_u64(i as u64),
            flags,
        )
        .is_err()
        {
            return self.connect_failed(i, now);
        }
        let u = &mut self.users[i];
        u.sock = Some(sock);
        u.state = State::Connecting;
        u.t0 = now;
    }

    fn connect_failed(&mut self, i: usize, now: Instant) {
        *self.res.errors.entry("connect".into()).or_default() += 1;
        self.close(i);
        self.users[i].state = State::Idle {
            at: now + Duration::from_millis(50),
        };
    }

    fn close(&mut self, i: usize) {
        if let Some(sock) = self.users[i].sock.take() {
            let _ = epoll::delete(&self.ep, sock.as_fd());
        }
    }

    fn ready(&mut self, i: usize, flags: epoll::EventFlags, buf: &mut [u8]) {
        let now = Instant::now();
        if i >= self.users.len() {
            return;
        }
        if matches!(self.users[i].state, State::Connecting) {
            let Some(sock) = self.users[i].sock.as_ref() else {
                return;
            };
            if !matches!(sockopt::socket_error(sock), Ok(Ok(())))
                || flags.intersects(epoll::EventFlags::ERR)
            {
                return self.connect_failed(i, now);
            }
            self.begin(i, now);
            return;
        }
        if !matches!(self.users[i].state, State::Busy) {
            return;
        }
        if flags.intersects(epoll::EventFlags::OUT) {
            self.write_request(i);
        }
        if flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR)
        {
            self.read(i, buf);
        }
    }

    /// Send the next request on user i's connection.
    fn begin(&mut self, i: usize, now: Instant) {
        let u = &mut self.users[i];
        u.state = State::Busy;
        u.resp = Response::new();
        u.sent = 0;
        u.t0 = now;
        u.t_head = None;
        u.t_first = None;
        u.last = now;
        u.events = 0;
        u.in_window = now >= self.ws;
        self.write_request(i);
    }

    fn write_request(&mut self, i: usize) {
        let req = &self.plan.request;
        let u = &mut self.users[i];
        let Some(sock) = u.sock.as_ref() else { return };
        while u.sent < req.len() {
            match rustix::io::write(sock, &req[u.sent..]) {
                Ok(n) => u.sent += n,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(_) => return self.fail(i, "write", Instant::now()),
            }
        }
        let flags = if u.sent < req.len() {
            epoll::EventFlags::IN | epoll::EventFlags::OUT
        } else {
            epoll::EventFlags::IN
        };
        let _ = epoll::modify(
            &self.ep,
            sock.as_fd(),
            epoll::EventData::new_u64(i as u64),
            flags,
        );
    }

    fn read(&mut self, i: usize, buf: &mut [u8]) {
        loop {
            let Some(sock) = self.users[i].sock.as_ref() else {
                return;
            };
            let n = match rustix::io::read(sock, &mut *buf) {
                Ok(n) => n,
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => continue,
                Err(_) => return self.fail(i, "connection_closed", Instant::now()),
            };
            let t = Instant::now();
            let u = &mut self.users[i];
            if n == 0 {
                if u.resp.eof() {
                    u.state = State::Idle { at: t }; // reconnect for the next request
                    self.finish(i, t);
                    self.close(i);
                    return;
                }
                return self.fail(i, "connection_closed", t);
            }
            if let Err(kind) = u.resp.feed(&buf[..n]) {
                return self.fail(i, kind, t);
            }
            if u.t_head.is_none() && u.resp.head_complete() {
                u.t_head = Some(t);
            }
            if u.resp.events != u.events {
                if u.t_first.is_none() {
                    u.t_first = Some(t);
                } else if u.in_window {
                    self.res.gaps.push((t - u.last).as_secs_f64());
                }
                u.last = t;
                u.events = u.resp.events;
            }
            if u.resp.done() {
                let keep = u.resp.keep_alive;
                self.finish(i, t);
                if !keep {
                    self.close(i);
                    self.users[i].state = State::Idle { at: t };
                } else if t < self.we {
                    self.begin(i, t);
                } else {
                    self.close(i);
                    self.users[i].state = State::Finished;
                }
                return;
            }
        }
    }

    /// Record a complete response.
    fn finish(&mut self, i: usize, t_end: Instant) {
        let u = &self.users[i];
        let r = &mut self.res;
        if u.resp.status != 200 {
            if u.in_window {
                *r.errors
                    .entry(format!("http_{}", u.resp.status))
                    .or_default() += 1;
            }
            return;
        }
        if self.ws <= t_end && t_end <= self.we {
            r.completed_in_window += 1;
        }
        if u.in_window && t_end <= self.we {
            let since = |t: Instant| (t - u.t0).as_secs_f64();
            r.ttfb.push(since(u.t_head.unwrap_or(t_end)));
            if let Some(t) = u.t_first {
                r.ttfe.push(since(t));
            }
            r.total.push(since(t_end));
            r.events += u64::from(u.events);
            r.ok += 1;
        }
    }

    fn fail(&mut self, i: usize, kind: &str, now: Instant) {
        if self.users[i].in_window || now <= self.we {
            *self.res.errors.entry(kind.into()).or_default() += 1;
        }
        self.close(i);
        self.users[i].state = State::Idle { at: now };
    }
}

fn write_results(out: &mut impl Write, r: &Results) -> io::Result<()> {
    fn list(out: &mut impl Write, name: &str, v: &[f64]) -> io::Result<()> {
        write!(out, "\"{name}\":[")?;
        for (k, x) in v.iter().enumerate() {
            write!(out, "{}{x}", if k == 0 { "" } else { "," })?;
        }
        write!(out, "],")
    }
    write!(out, "{{")?;
    list(out, "ttfb", &r.ttfb)?;
    list(out, "ttfe", &r.ttfe)?;
    list(out, "total", &r.total)?;
    list(out, "gaps", &r.gaps)?;
    write!(out, "\"errors\":{{")?;
    for (k, (name, n)) in r.errors.iter().enumerate() {
        write!(out, "{}\"{name}\":{n}", if k == 0 { "" } else { "," })?;
    }
    writeln!(
        out,
        "}},\"ok\":{},\"events\":{},\"completed_in_window\":{}}}",
        r.ok, r.events, r.completed_in_window
    )
}
