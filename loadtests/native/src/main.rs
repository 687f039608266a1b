//! sluicegate-loadgen: the benchmark's native load generator and paced fake upstream.
//!
//! At 1,000 paced streams and up, the Python load generator and `sluicegate mock-upstream`
//! saturate the one core they share (50,000 events a second each way), so the sweep measured
//! the client as much as the gateway. These two do the same work on one thread each, with one
//! epoll set and no interpreter. `loadtests/bench.py --load native` (the default when cargo is
//! there) builds and drives them; see docs/performance.md, "Method".
//!
//!     sluicegate-loadgen mock --port P --answer FILE [--tick-ms MS] [--host H]
//!     sluicegate-loadgen load --port P --request FILE --concurrency N --warmup S --duration S
//!                             [--ramp S] [--timeout S] [--host H]

mod load;
mod mock;
mod response;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

fn usage(msg: &str) -> ExitCode {
    eprintln!("sluicegate-loadgen: {msg}");
    eprintln!("usage: sluicegate-loadgen mock --port P --answer FILE [--tick-ms MS] [--host H]");
    eprintln!("       sluicegate-loadgen load --port P --request FILE --concurrency N --warmup S --duration S [--ramp S] [--timeout S] [--host H]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage("no command");
    };
    if rest.len() % 2 != 0 {
        return usage("options come in --name value pairs");
    }
    let mut opts: HashMap<&str, &str> = HashMap::new();
    for pair in rest.chunks(2) {
        let Some(name) = pair[0].strip_prefix("--") else {
            return usage(&format!("unexpected {}", pair[0]));
        };
        opts.insert(name, &pair[1]);
    }
    let host = opts.get("host").copied().unwrap_or("127.0.0.1");
    let Some(port) = opts.get("port").and_then(|p| p.parse::<u16>().ok()) else {
        return usage("--port is required");
    };
    let secs = |name: &str, default: Option<f64>| -> Option<Duration> {
        let v = match opts.get(name) {
            Some(v) => v.parse::<f64>().ok()?,
            None => default?,
        };
        (v >= 0.0 && v.is_finite()).then(|| Duration::from_secs_f64(v))
    };
    let result = match cmd.as_str() {
        "mock" => {
            let Some(path) = opts.get("answer") else {
                return usage("--answer is required");
            };
            // Milliseconds, read as seconds and scaled: `secs` checks the number.
            let Some(tick) = secs("tick-ms", Some(0.0)).map(|d| d / 1000) else {
                return usage("--tick-ms is a number of milliseconds");
            };
            mock::read_answer(path)
                .and_then(|answer| mock::serve(mock::listener(host, port)?, answer, tick))
        }
        "load" => {
            let Some(path) = opts.get("request") else {
                return usage("--request is required");
            };
            let request = match std::fs::read(path) {
                Ok(r) => r,
                Err(e) => return usage(&format!("{path}: {e}")),
            };
            let Some(concurrency) = opts.get("concurrency").and_then(|c| c.parse().ok()) else {
                return usage("--concurrency is required");
            };
            let (Some(warmup), Some(duration), Some(ramp), Some(timeout)) = (
                secs("warmup", None),
                secs("duration", None),
                secs("ramp", Some(0.0)),
                secs("timeout", Some(30.0)),
            ) else {
                return usage(
                    "--warmup and --duration are required (seconds, as are --ramp and --timeout)",
                );
            };
            let Ok(addr) = format!("{host}:{port}").parse() else {
                return usage("--host must be an IPv4 address");
            };
            load::run(&load::Plan {
                addr,
                request,
                concurrency,
                warmup,
                duration,
                ramp,
                timeout,
            })
        }
        other => return usage(&format!("unknown command {other}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluicegate-loadgen {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
