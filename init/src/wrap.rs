//! Wrap mode: `init [--timeout DUR] [--grace DUR] [--report] -- CMD [ARG...]`, a drop-in for
//! tini/dumb-init/catatonit. The lean path: no JSON, no serde, a handful of allocations.

use crate::machine::{fmt_ms, DEFAULT_GRACE_MS};
use crate::proc::{self, Launch, Supervisor, Wake};
use crate::sys;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use stepinit_protocol::{Record, Status};

pub const USAGE: &str = "usage: init [--timeout DUR] [--grace DUR] [--report] -- CMD [ARG...]
       init run SPEC [--group N] [--state DIR] [--termination-log PATH]
       init setup DIR [--spec SPEC]
DUR: integer with unit ms, s, m or h (bare integer: seconds). Default grace: 10s.
";

/// Exit code of a usage error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the timeout fired.
pub const EXIT_TIMEOUT: i32 = 124;

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds into milliseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

pub fn usage_error(msg: &str) -> i32 {
    sys::eprint_line(msg);
    let _ = sys::write_all(2, USAGE.as_bytes());
    EXIT_USAGE
}

struct Opts {
    timeout_ms: Option<u64>,
    grace_ms: u64,
    report: bool,
    cmd: Vec<OsString>,
}

fn parse(args: Vec<OsString>) -> Result<Opts, i32> {
    let mut o = Opts {
        timeout_ms: None,
        grace_ms: DEFAULT_GRACE_MS,
        report: false,
        cmd: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.as_bytes();
        if s == b"--" {
            o.cmd = it.collect();
            break;
        }
        if !s.starts_with(b"-") {
            // tini-style `init CMD ARGS`: the first non-flag starts the command.
            o.cmd = std::iter::once(a).chain(it).collect();
            break;
        }
        let text = String::from_utf8_lossy(s);
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (text.as_ref(), None),
        };
        match flag {
            "--report" if inline.is_none() => o.report = true,
            "-h" | "--help" => {
                let _ = sys::write_all(1, USAGE.as_bytes());
                return Err(0);
            }
            "--timeout" | "--grace" => {
                let v = match inline {
                    Some(v) => v,
                    None => match it.next() {
                        Some(v) => v.to_string_lossy().into_owned(),
                        None => return Err(usage_error(&format!("{flag} needs a duration"))),
                    },
                };
                let Some(ms) = parse_duration(&v) else {
                    return Err(usage_error(&format!("{flag}: invalid duration {v:?}")));
                };
                if flag == "--timeout" {
                    o.timeout_ms = Some(ms);
                } else {
                    o.grace_ms = ms;
                }
            }
            _ => return Err(usage_error(&format!("unknown flag {text:?}"))),
        }
    }
    if o.cmd.is_empty() {
        return Err(usage_error("no command given"));
    }
    Ok(o)
}

pub fn run(args: Vec<OsString>) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut sup = match Supervisor::new() {
        Ok(s) => s,
        Err(e) => {
            sys::eprint_line(&format!("cannot block signals: {e}"));
            return 1;
        }
    };
    let mut argv_c = Vec::with_capacity(o.cmd.len());
    for a in &o.cmd {
        match CString::new(a.as_bytes()) {
            Ok(c) => argv_c.push(c),
            // Only possible in-process (cli_main); said before any record is printed.
            Err(_) => return usage_error("an argument contains a NUL byte"),
        }
    }
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    if o.report {
        // Records are printed: no step may reach the terminal they go to.
        sup.guard_terminal();
    }
    let start = if o.report { sys::now_ms() } else { 0 };
    // parse() guarantees a command.
    let name = o.cmd[0].to_string_lossy().into_owned();
    if o.report {
        sup.emit(&Record::Start {
            step: "1".into(),
            name: Some(name.clone()),
            attempt: 1,
        });
    }
    let path_var = std::env::var("PATH");
    let path_var = path_var.as_deref().unwrap_or(proc::DEFAULT_PATH);
    let spawned = match proc::resolve_program(&name, path_var) {
        Err(e) => Err(e),
        Ok(path) => {
            let launch = Launch {
                relay: o.report,
                // With --report the record stream must be trusted: no inherited fd (one could
                // alias our stdout) reaches the child. Without it, fds pass on as with tini.
                only_std_fds: o.report,
                ..Launch::new(&path, &argv)
            };
            sup.spawn(&launch, o.grace_ms)
                .map_err(|e| proc::describe_spawn_error(e, &name, None))
        }
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err((code, reason)) => {
            sys::eprint_line(&reason);
            if o.report {
                finish(&mut sup, start, Status::Failed, Some(code), Some(reason));
            }
            return code;
        }
    };
    let deadline = o.timeout_ms.map(|t| sys::now_ms().saturating_add(t));
    let mut timed_out = false;
    let mut interrupted = false;
    let code = loop {
        match sup.wait(&mut child, if timed_out { None } else { deadline }) {
            Wake::Interrupt(sig) => {
                interrupted = true;
                sup.stop(&mut child, sig);
            }
            Wake::Deadline => {
                timed_out = true;
                sup.stop(&mut child, libc::SIGTERM);
            }
            Wake::Gone(code) => break code,
        }
    };
    if o.report {
        let (status, reason) = if timed_out {
            (
                Status::Timeout,
                Some(format!(
                    "timed out after {}",
                    fmt_ms(o.timeout_ms.unwrap_or(0))
                )),
            )
        } else if interrupted {
            (Status::Aborted, Some("stopped by a signal".to_string()))
        } else if code == 0 {
            (Status::Passed, None)
        } else {
            (Status::Failed, None)
        };
        finish(&mut sup, start, status, Some(code), reason);
    }
    if timed_out {
        EXIT_TIMEOUT
    } else {
        code
    }
}

fn finish(
    sup: &mut Supervisor,
    start: u64,
    status: Status,
    code: Option<i32>,
    reason: Option<String>,
) {
    let ms = sys::now_ms().saturating_sub(start);
    sup.emit(&Record::End {
        step: "1".into(),
        status,
        code,
        ms,
        attempt: 1,
        reason,
    });
    sup.emit(&Record::Done {
        status,
        ms,
        last: true,
        reason: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("10s"), Some(10_000));
        assert_eq!(parse_duration("2m"), Some(120_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("7"), Some(7000));
        for bad in ["", "s", "1.5s", "-1", "10x", "99999999999999999999"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    /// Runs `run(args)` in a forked child with stdout on a pipe: (exit code, stdout).
    fn run_capturing(args: Vec<OsString>) -> (i32, Vec<u8>) {
        let (r, w) = sys::pipe().unwrap();
        // SAFETY: the child only runs the CLI and exits.
        match unsafe { libc::fork() } {
            0 => {
                unsafe { libc::dup2(w, 1) };
                let code = run(args);
                unsafe { libc::_exit(code) }
            }
            pid => {
                sys::close(w);
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = sys::read(r, &mut buf) {
                    out.extend_from_slice(&buf[..n]);
                }
                sys::close(r);
                let mut st = 0;
                unsafe { libc::waitpid(pid, &mut st, 0) };
                (sys::exit_code(st), out)
            }
        }
    }

    #[test]
    fn a_usage_error_prints_no_record() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from("--report"),
            OsString::from("--"),
            OsString::from_vec(b"a\0b".to_vec()),
        ];
        let (code, out) = run_capturing(args);
        assert_eq!(
            (code, String::from_utf8_lossy(&out).as_ref()),
            (EXIT_USAGE, "")
        );
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags_parse() {
        let o = parse(os(&[
            "--timeout",
            "1s",
            "--grace=2s",
            "--report",
            "--",
            "a",
            "-b",
        ]))
        .ok()
        .unwrap();
        assert_eq!(
            (o.timeout_ms, o.grace_ms, o.report),
            (Some(1000), 2000, true)
        );
        assert_eq!(o.cmd, os(&["a", "-b"]));
        let o = parse(os(&["sleep", "--", "1"])).ok().unwrap();
        assert_eq!(o.cmd, os(&["sleep", "--", "1"]));
        assert_eq!(parse(os(&[])).err(), Some(2));
        assert_eq!(parse(os(&["--bogus", "--", "x"])).err(), Some(2));
        assert_eq!(parse(os(&["--grace", "x", "--", "x"])).err(), Some(2));
        assert_eq!(parse(os(&["--timeout"])).err(), Some(2));
    }
}
