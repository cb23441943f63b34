//! Results: collected from the init's records, printed live, then as a table, JSON or JUnit.
//!
//! JSON document (`--output json`), one object:
//! ```text
//! {"name": "hello", "status": "passed", "durationMs": 123,
//!  "steps": [{"id": "1", "name": "greet", "status": "passed", "exitCode": 0,
//!             "durationMs": 5, "attempts": 1, "reason": null, "steps": []}, ...]}
//! ```
//! `status` is one of passed, failed, skipped, timeout, aborted. `exitCode` is null for groups
//! and for steps that never ran; `attempts` counts the runs of a step (0 when skipped);
//! `durationMs` of a leaf is the sum over its attempts; `reason` explains failures the exit code
//! does not (timeout, missing program, abort).

use crate::duration::human;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use stepinit_protocol::attempts::Attempts;
use stepinit_protocol::{Record, Spec, Status};

#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub attempts: u32,
    pub reason: Option<String>,
    pub steps: Vec<StepResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub name: String,
    /// The workflow's `description`, shown above the steps.
    pub description: Option<String>,
    pub status: Status,
    pub duration_ms: u64,
    pub steps: Vec<StepResult>,
    /// Problems with the logs themselves (corrupt framing, missing final record).
    pub notes: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Acc {
    name: Option<String>,
    started: u32,
    ended: bool,
    status: Option<Status>,
    code: Option<i32>,
    ms: u64,
    last_attempt_ms: u64,
    reason: Option<String>,
    is_group: bool,
}

/// Collects records into results. The step tree comes from the spec when there is one, else it
/// is rebuilt from the ids (default ids are paths: `2.1` is a child of `2`).
#[derive(Debug, Default)]
pub struct Collector {
    order: Vec<String>,
    children: HashMap<String, Vec<String>>,
    roots: Vec<String>,
    acc: HashMap<String, Acc>,
    done: Option<(Status, u64, bool)>,
    done_ms_total: u64,
    from_spec: bool,
    /// Top-level steps whose failure does not fail the workflow (from the spec).
    optional: std::collections::HashSet<String>,
    /// The most attempts each leaf may have (from the spec: 1 + its retry count).
    max_attempts: HashMap<String, u32>,
    /// Repeats dropped, contradictions found (the protocol's rule for several inits' records).
    attempts: Attempts,
    /// Records that contradict each other: the run cannot be trusted to have passed.
    conflicts: Vec<String>,
    pub notes: Vec<String>,
}

fn parent_of(id: &str) -> Option<&str> {
    id.rfind('.').map(|i| &id[..i])
}

impl Collector {
    pub fn new(spec: Option<&Spec>) -> Self {
        let mut c = Collector::default();
        if let Some(spec) = spec {
            c.from_spec = true;
            fn walk(
                c: &mut Collector,
                steps: &[stepinit_protocol::Step],
                parent: Option<&str>,
                prefix: &str,
            ) {
                for (i, s) in steps.iter().enumerate() {
                    let id = s.id.clone().unwrap_or_else(|| {
                        if prefix.is_empty() {
                            (i + 1).to_string()
                        } else {
                            format!("{prefix}.{}", i + 1)
                        }
                    });
                    c.insert(&id, parent);
                    if parent.is_none() && s.optional {
                        c.optional.insert(id.clone());
                    }
                    if s.steps.is_empty() {
                        let retries = s.retry.as_ref().map_or(0, |r| r.count);
                        c.max_attempts.insert(id.clone(), retries.saturating_add(1));
                    }
                    let a = c.acc.get_mut(&id).unwrap();
                    a.name = s.name.clone();
                    a.is_group = !s.steps.is_empty();
                    walk(c, &s.steps, Some(&id), &id);
                }
            }
            walk(&mut c, &spec.steps, None, "");
        }
        c
    }

    fn insert(&mut self, id: &str, parent: Option<&str>) {
        if self.acc.contains_key(id) {
            return;
        }
        self.acc.insert(id.to_string(), Acc::default());
        self.order.push(id.to_string());
        match parent {
            Some(p) => {
                if !self.acc.contains_key(p) {
                    self.insert(p, parent_of(p));
                }
                self.acc.get_mut(p).unwrap().is_group = true;
                self.children
                    .entry(p.to_string())
                    .or_default()
                    .push(id.to_string())
            }
            None => self.roots.push(id.to_string()),
        }
    }

    fn ensure(&mut self, id: &str) {
        if !self.acc.contains_key(id) {
            if self.from_spec {
                self.notes.push(format!("record for unknown step {id:?}"));
            }
            self.insert(id, parent_of(id));
        }
    }

    /// The display name of a step.
    pub fn name(&self, id: &str) -> String {
        self.acc
            .get(id)
            .and_then(|a| a.name.clone())
            .unwrap_or_else(|| format!("step {id}"))
    }

    pub fn depth(id: &str) -> usize {
        id.matches('.').count()
    }

    pub fn is_group(&self, id: &str) -> bool {
        self.acc.get(id).is_some_and(|a| a.is_group)
    }

    /// Takes one record. An init that continues a journal prints the records of its last entry
    /// again (their writer may have died before printing them): a start or end of an attempt
    /// already seen is dropped when it is the same, and noted (the run cannot pass) when it says
    /// something else.
    pub fn on_record(&mut self, r: &Record) {
        if let Record::Start { step, attempt, .. } = r {
            if let Some(&max) = self.max_attempts.get(step) {
                if *attempt > max {
                    self.conflict(format!(
                        "step {step} starts attempt {attempt}, but the spec allows {max}"
                    ));
                    return;
                }
            }
        }
        match self.attempts.admit(r) {
            Ok(true) => {}
            Ok(false) => return,
            Err(c) => {
                self.conflict(c.0);
                return;
            }
        }
        match r {
            Record::Start { step, name, .. } => {
                self.ensure(step);
                let a = self.acc.get_mut(step).unwrap();
                a.started += 1;
                // The init's record names the step it really ran: it wins over a workflow
                // given to `decode` (a different version, or a name derived without the image).
                if name.is_some() {
                    a.name = name.clone();
                }
            }
            Record::End {
                step,
                status,
                code,
                ms,
                reason,
                ..
            } => {
                self.ensure(step);
                let a = self.acc.get_mut(step).unwrap();
                a.ended = true;
                a.status = Some(*status);
                a.code = *code;
                a.ms += ms;
                a.last_attempt_ms = *ms;
                a.reason = reason.clone();
            }
            Record::Done {
                status,
                ms,
                last,
                reason,
            } => {
                self.done_ms_total += ms;
                self.done = Some((*status, *ms, *last));
                if let Some(why) = reason {
                    if !self.notes.contains(why) {
                        self.notes.push(why.clone());
                    }
                }
            }
        }
    }

    fn conflict(&mut self, what: String) {
        if !self.conflicts.contains(&what) {
            self.conflicts.push(what);
        }
    }

    /// A record that failed authentication (see `follow::RecordAuth`): the run cannot pass.
    pub fn unverified(&mut self, what: &str) {
        self.conflict(what.to_string());
    }

    /// Whether the final (`last`) done record was seen.
    pub fn finished(&self) -> bool {
        matches!(self.done, Some((_, _, true)))
    }

    /// The results. `interrupted`: stepctl was interrupted (steps left unfinished are aborted
    /// when they had started, skipped otherwise). `wall_ms`: the run's duration as measured by
    /// the caller, or None to use the init's own figures.
    pub fn result(&self, name: &str, interrupted: bool, wall_ms: Option<u64>) -> RunResult {
        let mut notes = self.notes.clone();
        let steps: Vec<StepResult> = self
            .roots
            .iter()
            .map(|id| self.step_result(id, interrupted))
            .collect();
        let mut status = match self.done {
            Some((s, _, true)) => s,
            _ if interrupted => Status::Aborted,
            _ => {
                // Not "aborted": that is for runs that were interrupted.
                notes.push("the workflow's final record is missing (logs incomplete?)".into());
                Status::Failed
            }
        };
        // The final record speaks for the last container's init, which trusts the state; each
        // step's own record speaks for the init that ran it. A pass needs both.
        if status == Status::Passed {
            let failed = steps.iter().find(|s| {
                s.status.is_failure() && !(self.from_spec && self.optional.contains(&s.id))
            });
            if let Some(s) = failed.filter(|_| self.from_spec) {
                notes.push(format!(
                    "the final record says passed, but step {} {}: the run failed",
                    s.name, s.status
                ));
                status = Status::Failed;
            }
            // Every step of a workflow that ran to its end was reported, run or skipped.
            let unreported = self
                .order
                .iter()
                .find(|id| self.acc.get(*id).is_some_and(|a| a.status.is_none()));
            if let Some(id) = unreported.filter(|_| self.from_spec && status == Status::Passed) {
                notes.push(format!(
                    "the final record says passed, but step {} has no result: the run failed",
                    self.name(id)
                ));
                status = Status::Failed;
            }
        }
        if !self.conflicts.is_empty() {
            notes.extend(self.conflicts.iter().cloned());
            if status == Status::Passed {
                status = Status::Failed;
            }
        }
        RunResult {
            name: name.to_string(),
            description: None,
            status,
            duration_ms: wall_ms.unwrap_or(self.done_ms_total),
            steps,
            notes,
        }
    }

    fn step_result(&self, id: &str, interrupted: bool) -> StepResult {
        let a = self.acc.get(id).cloned().unwrap_or_default();
        let steps: Vec<StepResult> = self
            .children
            .get(id)
            .map(|c| c.iter().map(|x| self.step_result(x, interrupted)).collect())
            .unwrap_or_default();
        let started = a.started;
        let mut reason = a.reason;
        let status = match a.status {
            Some(s) => s,
            None if started > 0 && interrupted => Status::Aborted,
            None if started > 0 => {
                reason.get_or_insert_with(|| "its end was never reported".into());
                Status::Aborted
            }
            None => Status::Skipped,
        };
        StepResult {
            id: id.to_string(),
            name: self.name(id),
            status,
            exit_code: a.code,
            duration_ms: if a.is_group { a.last_attempt_ms } else { a.ms },
            attempts: started,
            reason,
            steps,
        }
    }
}

/// Live progress lines: `▶ name` when a step starts, `✔ name (12ms)` when it ends.
pub struct Live {
    pub color: bool,
}

impl Live {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// One line for a record, or None for records that print nothing.
    pub fn line(&self, c: &Collector, r: &Record) -> Option<String> {
        match r {
            Record::Start { step, attempt, .. } => {
                let indent = "  ".repeat(Collector::depth(step));
                let retry = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                Some(format!(
                    "{indent}{} {}{retry}",
                    self.paint("1;34", "▶"),
                    self.paint("1", &c.name(step))
                ))
            }
            Record::End {
                step,
                status,
                code,
                ms,
                reason,
                ..
            } => {
                let indent = "  ".repeat(Collector::depth(step));
                let (sym, col) = symbol(*status);
                let mut extra = String::new();
                if let (Some(code), false) = (code, *status == Status::Passed) {
                    extra.push_str(&format!(", exit {code}"));
                }
                if let Some(r) = reason {
                    extra.push_str(&format!(": {r}"));
                }
                Some(format!(
                    "{indent}{} {} {}{} ({})",
                    self.paint(col, sym),
                    c.name(step),
                    self.paint(col, status.as_str()),
                    extra,
                    human(*ms)
                ))
            }
            Record::Done { .. } => None,
        }
    }
}

fn symbol(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Passed => ("✔", "32"),
        Status::Failed => ("✘", "31"),
        Status::Skipped => ("○", "90"),
        Status::Timeout => ("⏱", "33"),
        Status::Aborted => ("■", "35"),
    }
}

/// The result table printed after a run.
pub fn table(r: &RunResult) -> String {
    let mut out = String::new();
    if let Some(d) = &r.description {
        // One line, whatever the YAML gave.
        let d: String = d.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!("{}: {d}\n", r.name));
    }
    let mut rows: Vec<[String; 5]> = vec![[
        "STEP".into(),
        "STATUS".into(),
        "EXIT".into(),
        "ATTEMPTS".into(),
        "DURATION".into(),
    ]];
    fn walk(steps: &[StepResult], depth: usize, rows: &mut Vec<[String; 5]>) {
        for s in steps {
            let name: String = format!("{}{}", "  ".repeat(depth), s.name);
            rows.push([
                name,
                s.status.as_str().into(),
                s.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                if s.steps.is_empty() {
                    s.attempts.to_string()
                } else {
                    "-".into()
                },
                if s.status == Status::Skipped {
                    "-".into()
                } else {
                    human(s.duration_ms)
                },
            ]);
            walk(&s.steps, depth + 1, rows);
        }
    }
    walk(&r.steps, 0, &mut rows);
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..5).map(width).collect();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < 4 {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "workflow {}: {} in {}\n",
        r.name,
        r.status,
        human(r.duration_ms)
    ));
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

pub fn to_json(r: &RunResult) -> Value {
    fn step(s: &StepResult) -> Value {
        json!({
            "id": s.id,
            "name": s.name,
            "status": s.status.as_str(),
            "exitCode": s.exit_code,
            "durationMs": s.duration_ms,
            "attempts": s.attempts,
            "reason": s.reason,
            "steps": s.steps.iter().map(step).collect::<Vec<_>>(),
        })
    }
    let mut doc = json!({
        "name": r.name,
        "status": r.status.as_str(),
        "durationMs": r.duration_ms,
        "steps": r.steps.iter().map(step).collect::<Vec<_>>(),
        "notes": r.notes,
    });
    if let Some(d) = &r.description {
        doc["description"] = json!(d);
    }
    doc
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: one testsuite for the workflow, one testcase per leaf step (classname: the path of
/// its groups), `failure` for failed/timeout/aborted, `skipped` for skipped steps.
pub fn junit(r: &RunResult) -> String {
    let mut cases = Vec::new();
    fn walk<'a>(steps: &'a [StepResult], path: &str, out: &mut Vec<(String, &'a StepResult)>) {
        for s in steps {
            if s.steps.is_empty() {
                out.push((path.to_string(), s));
            } else {
                let p = if path.is_empty() {
                    s.name.clone()
                } else {
                    format!("{path} / {}", s.name)
                };
                walk(&s.steps, &p, out);
            }
        }
    }
    walk(&r.steps, "", &mut cases);
    let failures = cases.iter().filter(|(_, s)| s.status.is_failure()).count();
    let skipped = cases
        .iter()
        .filter(|(_, s)| s.status == Status::Skipped)
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        xml_escape(&r.name),
        cases.len(),
        failures,
        skipped,
        r.duration_ms as f64 / 1000.0
    ));
    x.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">\n",
        xml_escape(&r.name),
        cases.len(),
        failures,
        skipped,
        r.duration_ms as f64 / 1000.0
    ));
    for (path, s) in cases {
        let class = if path.is_empty() {
            r.name.clone()
        } else {
            format!("{}.{}", r.name, path)
        };
        x.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            xml_escape(&s.name),
            xml_escape(&class),
            s.duration_ms as f64 / 1000.0
        ));
        let msg = || {
            let mut m = s.status.as_str().to_string();
            if let Some(c) = s.exit_code {
                m.push_str(&format!(", exit code {c}"));
            }
            if let Some(rsn) = &s.reason {
                m.push_str(&format!(": {rsn}"));
            }
            if s.attempts > 1 {
                m.push_str(&format!(" (after {} attempts)", s.attempts));
            }
            xml_escape(&m)
        };
        match s.status {
            Status::Passed => x.push_str("/>\n"),
            Status::Skipped => x.push_str(">\n      <skipped/>\n    </testcase>\n"),
            st => x.push_str(&format!(
                ">\n      <failure type=\"{}\" message=\"{}\"/>\n    </testcase>\n",
                st.as_str(),
                msg()
            )),
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// Output format of the final report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Prints the final report to `out`.
pub fn print(out: &mut dyn Write, r: &RunResult, format: Format) -> std::io::Result<()> {
    match format {
        Format::Text => out.write_all(table(r).as_bytes()),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(r)).expect("JSON of results");
            s.push('\n');
            out.write_all(s.as_bytes())
        }
    }
}

/// Exit code for a finished run: 0 passed, 130 aborted, 1 otherwise.
pub fn exit_code(r: &RunResult, interrupted: bool) -> i32 {
    if interrupted || r.status == Status::Aborted {
        130
    } else if r.status == Status::Passed {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(id: &str, attempt: u32) -> Record {
        Record::Start {
            step: id.into(),
            name: None,
            attempt,
        }
    }
    fn end(id: &str, status: Status, code: Option<i32>, ms: u64) -> Record {
        end_of(id, 1, status, code, ms)
    }
    fn end_of(id: &str, attempt: u32, status: Status, code: Option<i32>, ms: u64) -> Record {
        Record::End {
            step: id.into(),
            status,
            code,
            ms,
            attempt,
            reason: None,
        }
    }

    #[test]
    fn a_start_record_names_the_step_over_the_spec() {
        let wf = crate::workflow::parse(
            "c.yaml",
            "kind: TestWorkflow\nmetadata: {name: t}\nspec: {steps: [{name: old, shell: a}, {name: kept, shell: b}]}\n",
        )
        .unwrap();
        let plan = crate::plan::plan(&wf, None).unwrap();
        let mut c = Collector::new(Some(&plan.spec));
        c.on_record(&Record::Start {
            step: "1".into(),
            name: Some("new".into()),
            attempt: 1,
        });
        c.on_record(&start("2", 1));
        assert_eq!(c.name("1"), "new");
        assert_eq!(c.name("2"), "kept");
    }

    fn sample() -> Collector {
        let wf =
            crate::workflow::parse("c.yaml", include_str!("../tests/workflows/conditions.yaml"))
                .unwrap();
        let plan = crate::plan::plan(&wf, None).unwrap();
        let mut c = Collector::new(Some(&plan.spec));
        for r in [
            start("1", 1),
            start("1.1", 1),
            end("1.1", Status::Passed, Some(0), 3),
            start("1.2", 1),
            end("1.2", Status::Failed, Some(1), 4),
            start("1.2", 2),
            end_of("1.2", 2, Status::Passed, Some(0), 5),
            end("1", Status::Passed, None, 20),
            start("2", 1),
            end("2", Status::Passed, Some(1), 2),
            start("3", 1),
            Record::End {
                step: "3".into(),
                status: Status::Timeout,
                code: Some(143),
                ms: 2000,
                attempt: 1,
                reason: Some("timed out after 2s".into()),
            },
            start("4", 1),
            end("4", Status::Passed, Some(0), 1),
            Record::Done {
                status: Status::Passed,
                ms: 2100,
                last: true,
                reason: None,
            },
        ] {
            c.on_record(&r);
        }
        c
    }

    #[test]
    fn results_follow_the_spec_tree() {
        let r = sample().result("conditions", false, None);
        assert_eq!(r.status, Status::Passed);
        assert_eq!(r.steps.len(), 4);
        assert_eq!(r.steps[0].name, "smoke");
        assert_eq!(r.steps[0].steps[1].name, "flaky");
        assert_eq!(r.steps[0].steps[1].attempts, 2);
        assert_eq!(r.steps[0].steps[1].duration_ms, 9);
        assert_eq!(r.steps[0].exit_code, None);
        assert_eq!(r.steps[2].status, Status::Timeout);
        assert_eq!(r.duration_ms, 2100);
        let j = to_json(&r);
        assert_eq!(j["steps"][0]["steps"][1]["attempts"], 2);
        assert_eq!(j["steps"][2]["reason"], "timed out after 2s");
        assert_eq!(j["status"], "passed");
        assert_eq!(exit_code(&r, false), 0);
    }

    #[test]
    fn tree_is_rebuilt_from_ids_without_a_spec() {
        let mut c = Collector::new(None);
        c.on_record(&Record::Start {
            step: "2.1".into(),
            name: Some("inner".into()),
            attempt: 1,
        });
        c.on_record(&end("2.1", Status::Failed, Some(3), 1));
        c.on_record(&end_of("3", 0, Status::Skipped, None, 0));
        let r = c.result("x", false, None);
        assert_eq!(r.steps[0].id, "2");
        assert_eq!(r.steps[0].steps[0].name, "inner");
        assert_eq!(r.steps[1].status, Status::Skipped);
        assert_eq!(
            r.status,
            Status::Failed,
            "no final record: failed, with a note"
        );
        assert_eq!(r.notes.len(), 1);
    }

    /// A later init prints the records of its journal's last entry again: the same records
    /// count once; a record that says something else of the same attempt fails the run.
    #[test]
    fn repeated_records_count_once_and_contradictions_fail() {
        let mut c = sample();
        c.on_record(&start("4", 1));
        c.on_record(&end("4", Status::Passed, Some(0), 1));
        let r = c.result("conditions", false, None);
        assert_eq!(r.status, Status::Passed, "{:?}", r.notes);
        assert_eq!(r.steps[3].attempts, 1);
        assert_eq!(r.steps[3].duration_ms, 1);
        c.on_record(&end("4", Status::Failed, Some(1), 1));
        let r = c.result("conditions", false, None);
        assert_eq!(r.status, Status::Failed);
        assert!(
            r.notes.iter().any(|n| n.contains("reported twice")),
            "{:?}",
            r.notes
        );
    }

    /// The last init's `done` follows the state it was handed; a step's own end record comes
    /// from the init that ran it. A `passed` done over a failed step fails the run.
    #[test]
    fn a_passed_done_over_a_failed_step_fails() {
        let wf = crate::workflow::parse(
            "c.yaml",
            "kind: TestWorkflow\nmetadata: {name: t}\nspec: {steps: [{shell: a}, {shell: b, optional: true}]}\n",
        )
        .unwrap();
        let plan = crate::plan::plan(&wf, None).unwrap();
        let run = |status_1: Status, status_2: Status| {
            let mut c = Collector::new(Some(&plan.spec));
            c.on_record(&start("1", 1));
            c.on_record(&end("1", status_1, Some(0), 1));
            c.on_record(&start("2", 1));
            c.on_record(&end("2", status_2, Some(1), 1));
            c.on_record(&Record::Done {
                status: Status::Passed,
                ms: 2,
                last: true,
                reason: None,
            });
            c.result("t", false, None)
        };
        assert_eq!(
            run(Status::Passed, Status::Failed).status,
            Status::Passed,
            "step 2 is optional"
        );
        let r = run(Status::Failed, Status::Passed);
        assert_eq!(r.status, Status::Failed);
        assert!(
            r.notes[0].contains("says passed, but step"),
            "{:?}",
            r.notes
        );
    }

    /// What a review's forgeries relied on: ends of attempts that never started, an attempt
    /// beyond the spec's retries, a pass with steps never reported, a record that fails
    /// authentication.
    #[test]
    fn records_a_run_could_not_have_made_fail_it() {
        let wf = crate::workflow::parse(
            "c.yaml",
            "kind: TestWorkflow\nmetadata: {name: t}\nspec: {steps: [{shell: a, retry: {count: 1}}, {shell: b}]}\n",
        )
        .unwrap();
        let plan = crate::plan::plan(&wf, None).unwrap();
        let done = Record::Done {
            status: Status::Passed,
            ms: 2,
            last: true,
            reason: None,
        };
        let run = |records: &[Record], unverified: bool| {
            let mut c = Collector::new(Some(&plan.spec));
            for r in records {
                c.on_record(r);
            }
            if unverified {
                c.unverified("a record whose authentication tag does not verify on stdout");
            }
            c.result("t", false, None)
        };
        let fine = [
            start("1", 1),
            end("1", Status::Failed, Some(1), 1),
            start("1", 2),
            end_of("1", 2, Status::Passed, Some(0), 1),
            start("2", 1),
            end("2", Status::Passed, Some(0), 1),
            done.clone(),
        ];
        assert_eq!(run(&fine, false).status, Status::Passed);
        let r = run(&fine, true);
        assert_eq!(r.status, Status::Failed);
        assert!(
            r.notes.iter().any(|n| n.contains("authentication")),
            "{:?}",
            r.notes
        );
        for (what, records) in [
            (
                "an end without its start",
                vec![
                    end("1", Status::Passed, Some(0), 1),
                    start("2", 1),
                    end("2", Status::Passed, Some(0), 1),
                    done.clone(),
                ],
            ),
            (
                "an attempt the spec does not allow",
                vec![
                    start("1", 1),
                    end("1", Status::Failed, Some(1), 1),
                    start("1", 2),
                    end_of("1", 2, Status::Failed, Some(1), 1),
                    start("1", 3),
                    end_of("1", 3, Status::Passed, Some(0), 1),
                    start("2", 1),
                    end("2", Status::Passed, Some(0), 1),
                    done.clone(),
                ],
            ),
            (
                "a step never reported",
                vec![
                    start("1", 1),
                    end("1", Status::Passed, Some(0), 1),
                    done.clone(),
                ],
            ),
            (
                "a skip after a failure",
                vec![
                    start("1", 1),
                    end("1", Status::Failed, Some(1), 1),
                    end_of("1", 0, Status::Skipped, None, 0),
                    start("2", 1),
                    end("2", Status::Passed, Some(0), 1),
                    done.clone(),
                ],
            ),
        ] {
            let r = run(&records, false);
            assert_eq!(r.status, Status::Failed, "{what}: {:?}", r.notes);
        }
    }

    #[test]
    fn a_missing_final_record_is_a_failure_not_an_interrupt() {
        let mut c = Collector::new(None);
        c.on_record(&start("1", 1));
        let r = c.result("x", false, None);
        assert_eq!(r.status, Status::Failed);
        assert_eq!(exit_code(&r, false), 1);
        assert_eq!(
            r.steps[0].reason.as_deref(),
            Some("its end was never reported")
        );
    }

    #[test]
    fn interrupted_runs_mark_started_steps_aborted() {
        let mut c = Collector::new(None);
        c.on_record(&start("1", 1));
        let r = c.result("x", true, Some(5));
        assert_eq!(r.status, Status::Aborted);
        assert_eq!(r.steps[0].status, Status::Aborted);
        assert_eq!(exit_code(&r, true), 130);
    }

    #[test]
    fn junit_has_a_case_per_leaf_and_escapes() {
        let mut r = sample().result("con<d>", false, Some(1500));
        r.steps[1].name = "a \"quoted\" & <odd>\x01 name".into();
        let x = junit(&r);
        assert!(x.contains("tests=\"5\" failures=\"1\""), "{x}");
        assert!(x.contains("<failure type=\"timeout\" message=\"timeout, exit code 143: timed out after 2s\"/>"), "{x}");
        assert!(
            x.contains("a &quot;quoted&quot; &amp; &lt;odd&gt;? name"),
            "{x}"
        );
        assert!(x.contains("classname=\"con&lt;d&gt;.smoke\""), "{x}");
        assert!(!x.contains('\x01'));
    }

    #[test]
    fn table_lists_every_step() {
        let t = table(&sample().result("conditions", false, Some(2500)));
        assert!(t.contains("  flaky"), "{t}");
        assert!(t.contains("timeout"), "{t}");
        assert!(t.ends_with("workflow conditions: passed in 2.5s\n"), "{t}");
    }
}
