//! The termination summary: what one container's init ran, in under 4096 bytes.
//!
//! Kubernetes keeps at most 4096 bytes of a container's termination message (the file
//! `/dev/termination-log`), so a controller can read step results from the pod status without
//! logs. The format is line-based text, one field per line:
//!
//! ```text
//! stepinit-summary 1
//! container 2 last 1 status failed
//! counts passed=3 failed=1 skipped=2 timeout=0 aborted=0
//! step 1 passed 0
//! step 2.1 failed 1
//! step 2 skipped -
//! more 0
//! ```
//!
//! `counts` always covers every step the init reported. `step ID STATUS CODE` lines follow in the
//! order the steps ended (CODE `-`: none); when they do not all fit, only the failed, timed-out
//! and aborted steps are listed (as many as fit) and `more N` says how many were left out.
//! Step ids are percent-encoded (bytes outside `!`..`~` and `%` itself), so a line never holds a
//! space or newline of an id. Unknown lines are ignored by the decoder (forward compatible).

use crate::record::Status;

/// Kubernetes' limit on a termination message; an encoded summary is always shorter.
pub const MAX_BYTES: usize = 4096;

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub id: String,
    pub status: Status,
    pub code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub container: u32,
    /// Written by the workflow's last container: `status` is then the workflow's final result.
    pub last: bool,
    pub status: Status,
    /// Steps per status, indexed like [`Status::ALL`].
    pub counts: [u32; 5],
    /// Detailed results (all, or the failing ones when all do not fit).
    pub steps: Vec<StepResult>,
    /// Steps left out of `steps`.
    pub more: u32,
}

impl Summary {
    /// Builds a summary from the steps' results, in the order they ended.
    pub fn new(container: u32, last: bool, status: Status, steps: Vec<StepResult>) -> Summary {
        let mut counts = [0; 5];
        for s in &steps {
            counts[s.status as usize] += 1;
        }
        Summary {
            container,
            last,
            status,
            counts,
            steps,
            more: 0,
        }
    }

    /// Encodes, dropping step lines as needed so the result is always under [`MAX_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"stepinit-summary 1\n");
        out.extend_from_slice(
            format!(
                "container {} last {} status {}\ncounts",
                self.container, self.last as u8, self.status
            )
            .as_bytes(),
        );
        for st in Status::ALL {
            out.extend_from_slice(format!(" {}={}", st, self.counts[st as usize]).as_bytes());
        }
        out.push(b'\n');
        let lines: Vec<Vec<u8>> = self.steps.iter().map(step_line).collect();
        // "more 4294967295\n" is 16 bytes: keep room for it.
        let budget = MAX_BYTES - 1 - 16 - out.len();
        let total: usize = lines.iter().map(Vec::len).sum();
        let mut more = self.more;
        if total <= budget {
            for l in &lines {
                out.extend_from_slice(l);
            }
        } else {
            let mut used = 0;
            for (s, l) in self.steps.iter().zip(&lines) {
                if s.status.is_failure() && used + l.len() <= budget {
                    out.extend_from_slice(l);
                    used += l.len();
                } else {
                    more = more.saturating_add(1);
                }
            }
        }
        out.extend_from_slice(format!("more {more}\n").as_bytes());
        out
    }

    /// Decodes a summary; unknown lines are skipped.
    pub fn decode(bytes: &[u8]) -> Result<Summary, &'static str> {
        let text = std::str::from_utf8(bytes).map_err(|_| "summary is not UTF-8")?;
        let mut lines = text.lines();
        if lines.next() != Some("stepinit-summary 1") {
            return Err("not a stepinit summary of version 1");
        }
        let mut s = Summary {
            container: 0,
            last: false,
            status: Status::Passed,
            counts: [0; 5],
            steps: Vec::new(),
            more: 0,
        };
        let mut seen_header = false;
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["container", c, "last", l, "status", st] => {
                    s.container = c.parse().map_err(|_| "bad container")?;
                    s.last = *l == "1";
                    s.status = Status::parse(st).ok_or("bad status")?;
                    seen_header = true;
                }
                ["counts", rest @ ..] => {
                    for kv in rest {
                        let (k, v) = kv.split_once('=').ok_or("bad count")?;
                        if let Some(st) = Status::parse(k) {
                            s.counts[st as usize] = v.parse().map_err(|_| "bad count")?;
                        }
                    }
                }
                ["step", id, st, code] => s.steps.push(StepResult {
                    id: unescape(id).ok_or("bad step id")?,
                    status: Status::parse(st).ok_or("bad step status")?,
                    code: match *code {
                        "-" => None,
                        c => Some(c.parse().map_err(|_| "bad step code")?),
                    },
                }),
                ["more", n] => s.more = n.parse().map_err(|_| "bad more")?,
                _ => {}
            }
        }
        if !seen_header {
            return Err("summary without its container line");
        }
        Ok(s)
    }
}

fn step_line(s: &StepResult) -> Vec<u8> {
    let mut l = b"step ".to_vec();
    for &b in s.id.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            l.push(b);
        } else {
            l.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    l.extend_from_slice(format!(" {} ", s.status).as_bytes());
    match s.code {
        Some(c) => l.extend_from_slice(c.to_string().as_bytes()),
        None => l.push(b'-'),
    }
    l.push(b'\n');
    l
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, status: Status, code: Option<i32>) -> StepResult {
        StepResult {
            id: id.into(),
            status,
            code,
        }
    }

    #[test]
    fn small_summaries_roundtrip_exactly() {
        let s = Summary::new(
            2,
            true,
            Status::Failed,
            vec![
                step("1", Status::Passed, Some(0)),
                step("weird id %\n\u{e9}", Status::Failed, Some(-3)),
                step("2", Status::Skipped, None),
            ],
        );
        let enc = s.encode();
        assert!(enc.len() < MAX_BYTES);
        assert_eq!(Summary::decode(&enc), Ok(s));
        assert!(String::from_utf8(enc)
            .unwrap()
            .contains("counts passed=1 failed=1 skipped=1 timeout=0 aborted=0\n"));
    }

    #[test]
    fn ten_thousand_steps_fit_and_keep_counts_and_failures() {
        let mut steps = Vec::new();
        for i in 0..10_000 {
            let status = match i % 1000 {
                7 => Status::Failed,
                8 => Status::Timeout,
                _ => Status::Passed,
            };
            steps.push(step(
                &format!("group-{i}.{}", "x".repeat(40)),
                status,
                Some(0),
            ));
        }
        let s = Summary::new(0, false, Status::Failed, steps);
        let enc = s.encode();
        assert!(enc.len() < MAX_BYTES, "{} bytes", enc.len());
        let d = Summary::decode(&enc).unwrap();
        assert_eq!(d.counts, [9980, 10, 0, 10, 0]);
        assert_eq!(d.steps.len(), 20, "all 20 failures fit");
        assert!(d.steps.iter().all(|s| s.status.is_failure()));
        assert_eq!(d.more, 9980);
        assert_eq!(d.steps[0].id, format!("group-7.{}", "x".repeat(40)));
    }

    #[test]
    fn failures_beyond_the_budget_are_counted_not_listed() {
        let steps = (0..10_000)
            .map(|i| step(&"y".repeat(200 + i % 7), Status::Failed, Some(1)))
            .collect();
        let enc = Summary::new(1, true, Status::Failed, steps).encode();
        assert!(enc.len() < MAX_BYTES, "{} bytes", enc.len());
        let d = Summary::decode(&enc).unwrap();
        assert_eq!(d.steps.len() as u32 + d.more, 10_000);
        assert_eq!(d.counts[Status::Failed as usize], 10_000);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"hello", b"stepinit-summary 1\n", b"\xff\xfe"] {
            assert!(Summary::decode(bad).is_err());
        }
        let bad_code = b"stepinit-summary 1\ncontainer 0 last 0 status passed\nstep a passed x\n";
        assert!(Summary::decode(bad_code).is_err());
    }
}
