//! The sequencing logic of spec mode, as a pure state machine.
//!
//! Inputs are [`Event`]s (the running leaf exited, could not be spawned, reached its deadline, or
//! the workflow is aborted) with an injected monotonic "now" in milliseconds; outputs are
//! [`Action`]s (spawn a leaf, start its stop sequence, emit a record, save the state, exit). No
//! process, clock or file is touched here, so every rule is unit-tested without processes.
//!
//! The walk: the spec's tree in order. A node is entered once (condition evaluated, `start`
//! emitted), a leaf runs (attempt after attempt while `retry` allows), a group ends when its last
//! child has. Across containers the [`State`] carries every node's phase and every scope's
//! "failed so far", so the init of container N continues where the init of N-1 stopped.

use serde::{Deserialize, Serialize};
use stepinit_protocol::spec::{Condition, Spec, Until};
use stepinit_protocol::{Record, Status};

/// Default time between SIGTERM and SIGKILL when a step is stopped.
pub const DEFAULT_GRACE_MS: u64 = 10_000;

/// Exit codes of spec mode.
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_ABORTED: i32 = 130;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The leaf's main process exited with this code (128+N: signal N) and its whole process tree
    /// is gone. After a [`Action::Stop`], this is "the stop sequence finished".
    Exited { code: i32 },
    /// The leaf could not be started (program not found, working directory, ...).
    SpawnFailed { code: Option<i32>, reason: String },
    /// The deadline given with [`Action::Spawn`] was reached.
    Deadline,
    /// SIGTERM/SIGINT: stop the running leaf, skip everything after it.
    Abort,
}

/// What to run for one attempt of a leaf, resolved from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub node: usize,
    pub step: String,
    pub attempt: u32,
    pub argv: Vec<String>,
    /// spec.env then step.env, applied in order over the init's environment (later wins).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub grace_ms: u64,
    /// Monotonic ms at which the attempt must be stopped (its own or an enclosing group's).
    pub deadline: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn(Launch),
    /// Start the stop sequence of the running leaf; an [`Event::Exited`] follows when it is done.
    Stop,
    Emit(Record),
    /// The state changed: persist [`Machine::state`] (when `--state` is given). The driver
    /// saves it as it is after the whole batch of actions.
    Save,
    Exit(i32),
}

/// A node's phase, persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    /// Skipped (a skipped group, an abort) by an earlier container; the container that owns the
    /// node reports it (with the saved reason).
    SkipPending,
    Running,
    Passed,
    Failed,
    Skipped,
    Timeout,
    Aborted,
}

impl Phase {
    pub fn status(self) -> Option<Status> {
        Some(match self {
            Phase::Pending | Phase::SkipPending | Phase::Running => return None,
            Phase::Passed => Status::Passed,
            Phase::Failed => Status::Failed,
            Phase::Skipped => Status::Skipped,
            Phase::Timeout => Status::Timeout,
            Phase::Aborted => Status::Aborted,
        })
    }
    fn done(s: Status) -> Phase {
        match s {
            Status::Passed => Phase::Passed,
            Status::Failed => Phase::Failed,
            Status::Skipped => Phase::Skipped,
            Status::Timeout => Phase::Timeout,
            Status::Aborted => Phase::Aborted,
        }
    }
}

/// One node's persisted state (index 0 is the workflow itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeState {
    pub phase: Phase,
    /// Groups: a non-optional child failed. Leaves: unused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
    /// Groups: their own deadline fired.
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// Monotonic ms when the node (the current attempt, for leaves) started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Why a `skipPending` node is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}
fn is_zero32(n: &u32) -> bool {
    *n == 0
}

impl NodeState {
    fn pending() -> NodeState {
        NodeState {
            phase: Phase::Pending,
            failed: false,
            timed_out: false,
            started_ms: 0,
            deadline_ms: None,
            attempt: 0,
            code: None,
            reason: None,
        }
    }
}

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// Everything the next container's init needs, saved as JSON after every step change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Identifies the spec (ids, shape, containers): a state never applies to another spec.
    pub spec: String,
    /// SIGTERM/SIGINT reached an init: everything not yet run is skipped.
    #[serde(default)]
    pub aborted: bool,
    /// The container whose init wrote this state last.
    pub container: u32,
    /// Per node, in tree pre-order; index 0 is the workflow.
    pub nodes: Vec<NodeState>,
}

#[derive(Debug, Clone)]
struct Leaf {
    argv: Vec<String>,
    /// A `shell` step: argv[0] is the shell this container resolved (not part of the spec).
    shell: bool,
    working_dir: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    container: u32,
}

#[derive(Debug, Clone)]
struct Node {
    id: String,
    name: Option<String>,
    parent: usize,
    children: Vec<usize>,
    next_sibling: Option<usize>,
    leaf: Option<Leaf>,
    env: Vec<(String, String)>,
    condition: Condition,
    negative: bool,
    optional: bool,
    timeout_ms: Option<u64>,
    grace_ms: u64,
    retry: Option<(u32, Until)>,
    first_container: u32,
    last_container: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Enter(usize),
    Leave(usize),
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stopping {
    No,
    Timeout(String),
    Abort,
}

#[derive(Debug, Clone)]
struct Running {
    node: usize,
    stopping: Stopping,
}

/// Spec mode's sequencing for the init of container `group`. Node indexes only come from the
/// tree built in [`Machine::new`], and `st` has one entry per node (a loaded state of another
/// length is refused), so the indexing below cannot panic.
#[derive(Debug, Clone)]
pub struct Machine {
    nodes: Vec<Node>,
    st: Vec<NodeState>,
    fingerprint: String,
    aborted: bool,
    group: u32,
    last: bool,
    cursor: Cursor,
    running: Option<Running>,
    /// Nodes whose end record this init emitted (for the termination summary).
    reported: Vec<usize>,
}

/// A spec the machine cannot run, with the JSON path of the culprit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub path: String,
    pub message: String,
}

impl Machine {
    /// `shell` is the program for `shell` steps when the spec names none. The spec must already
    /// be [`Spec::validate`]d.
    pub fn new(
        spec: &Spec,
        group: u32,
        shell: &str,
        state: Option<State>,
    ) -> Result<Machine, BuildError> {
        let mut nodes = vec![Node {
            id: String::new(),
            name: None,
            parent: 0,
            children: vec![],
            next_sibling: None,
            leaf: None,
            env: spec
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            condition: Condition::Always,
            negative: false,
            optional: false,
            timeout_ms: None,
            grace_ms: DEFAULT_GRACE_MS,
            retry: None,
            first_container: u32::MAX,
            last_container: 0,
        }];
        let shell = spec.shell.as_deref().unwrap_or(shell);
        let mut last_container = 0;
        add_children(
            &mut nodes,
            0,
            &spec.steps,
            "steps",
            "",
            shell,
            &mut last_container,
        )?;
        let count = spec.container_count() as u32;
        if group >= count {
            return Err(BuildError {
                path: "--group".into(),
                message: format!("container {group} does not exist (spec has {count})"),
            });
        }
        let fingerprint = fingerprint(&nodes);
        let (st, aborted) = match state {
            None => (vec![NodeState::pending(); nodes.len()], false),
            Some(s) => {
                if s.version != STATE_VERSION {
                    return Err(BuildError {
                        path: "state.version".into(),
                        message: format!("unsupported state version {}", s.version),
                    });
                }
                if s.spec != fingerprint || s.nodes.len() != nodes.len() {
                    return Err(BuildError {
                        path: "state.spec".into(),
                        message: "the state was written for another spec".into(),
                    });
                }
                (s.nodes, s.aborted)
            }
        };
        Ok(Machine {
            nodes,
            st,
            fingerprint,
            aborted,
            group,
            last: group + 1 == count,
            cursor: Cursor::Enter(0),
            running: None,
            reported: Vec::new(),
        })
    }

    /// The state to persist.
    pub fn state(&self) -> State {
        State {
            version: STATE_VERSION,
            spec: self.fingerprint.clone(),
            aborted: self.aborted,
            container: self.group,
            nodes: self.st.clone(),
        }
    }

    pub fn is_last(&self) -> bool {
        self.last
    }

    /// (step id, status, exit code) of each step this init reported an end for, in order.
    pub fn reported(&self) -> impl Iterator<Item = (&str, Status, Option<i32>)> + '_ {
        self.reported.iter().filter_map(|&i| {
            Some((
                self.nodes[i].id.as_str(),
                self.st[i].phase.status()?,
                self.st[i].code,
            ))
        })
    }

    /// The workflow's status so far (its final status once the last container is done).
    pub fn workflow_status(&self) -> Status {
        if self.aborted {
            Status::Aborted
        } else if self.st[0].failed || self.st[0].timed_out {
            Status::Failed
        } else {
            Status::Passed
        }
    }

    /// First call: recovers from a killed predecessor, then runs up to the first spawn.
    pub fn start(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.st[0].phase == Phase::Pending {
            self.st[0].phase = Phase::Running;
            self.st[0].started_ms = now;
        }
        // A leaf left `running` means the init running it was killed (OOM, node pressure): it
        // is reported aborted here, counts as a failure, and the walk goes on by the conditions.
        for i in 1..self.nodes.len() {
            if self.nodes[i].leaf.is_some() && self.st[i].phase == Phase::Running {
                let c = self.nodes[i].leaf.as_ref().map_or(0, |l| l.container);
                let reason = format!("the init of container {c} was killed while this step ran");
                self.end_node(i, Status::Aborted, None, Some(reason), now, &mut out);
            }
        }
        self.advance(now, &mut out);
        out
    }

    pub fn handle(&mut self, ev: Event, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Abort => {
                let first = !self.aborted;
                self.aborted = true;
                if let Some(r) = self.running.as_mut() {
                    if r.stopping == Stopping::No {
                        out.push(Action::Stop);
                    }
                    r.stopping = Stopping::Abort;
                }
                if first {
                    out.push(Action::Save);
                }
            }
            Event::Deadline => {
                let Some(r) = self.running.as_ref() else {
                    return out;
                };
                if r.stopping != Stopping::No {
                    return out;
                }
                let node = r.node;
                // An enclosing group whose deadline passed (also at the same instant as the
                // leaf's own) is marked timed out and names the reason.
                let (who, ms) = match self.timed_out_scope(node, now) {
                    Some(g) => (
                        format!("group {} ", self.nodes[g].id),
                        self.nodes[g].timeout_ms,
                    ),
                    None => (String::new(), self.nodes[node].timeout_ms),
                };
                let reason = format!("{who}timed out after {}", fmt_ms(ms.unwrap_or(0)));
                if let Some(r) = self.running.as_mut() {
                    r.stopping = Stopping::Timeout(reason);
                }
                out.push(Action::Stop);
            }
            Event::Exited { code } => {
                let Some(r) = self.running.take() else {
                    return out;
                };
                let negative = self.nodes[r.node].negative;
                let (status, reason) = match r.stopping {
                    Stopping::Abort => (Status::Aborted, Some("aborted by a signal".to_string())),
                    Stopping::Timeout(reason) => (Status::Timeout, Some(reason)),
                    Stopping::No => {
                        let ok = (code == 0) != negative;
                        let reason = match (ok, negative) {
                            (false, true) => Some("expected a failure, got exit code 0".into()),
                            _ => None,
                        };
                        (if ok { Status::Passed } else { Status::Failed }, reason)
                    }
                };
                self.attempt_ended(r.node, status, Some(code), reason, now, &mut out);
            }
            Event::SpawnFailed { code, reason } => {
                let Some(r) = self.running.take() else {
                    return out;
                };
                let status = if r.stopping == Stopping::Abort {
                    Status::Aborted
                } else {
                    Status::Failed
                };
                self.attempt_ended(r.node, status, code, Some(reason), now, &mut out);
            }
        }
        out
    }

    fn attempt_ended(
        &mut self,
        i: usize,
        status: Status,
        code: Option<i32>,
        reason: Option<String>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let attempt = self.st[i].attempt;
        let retry_more = match self.nodes[i].retry {
            Some((count, until)) => {
                let satisfied = match until {
                    Until::Passed => status == Status::Passed,
                    Until::Failed => status.is_failure(),
                };
                !satisfied
                    && attempt <= count
                    && status != Status::Aborted
                    && !self.aborted
                    && self.timed_out_scope(i, now).is_none()
            }
            None => false,
        };
        if retry_more {
            out.push(self.end_record(i, status, code, reason, now));
            self.start_attempt(i, attempt + 1, now, out);
            return;
        }
        self.end_node(i, status, code, reason, now, out);
        self.cursor = self.after(i);
        self.advance(now, out);
    }

    /// Marks a node done, emits its end, propagates a failure to its parent scope.
    fn end_node(
        &mut self,
        i: usize,
        status: Status,
        code: Option<i32>,
        reason: Option<String>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.st[i].phase = Phase::done(status);
        self.st[i].code = code;
        // Saved before it is printed: an init killed while its stdout blocks must not leave a
        // printed result that the state still calls `running` (the next init would report it
        // again, as aborted).
        out.push(Action::Save);
        out.push(self.end_record(i, status, code, reason, now));
        self.reported.push(i);
        if status.is_failure() && !self.nodes[i].optional {
            let p = self.nodes[i].parent;
            self.st[p].failed = true;
        }
    }

    /// The `end` record of node `i`'s current attempt (a skipped node never ran: attempt 0, 0 ms).
    fn end_record(
        &self,
        i: usize,
        status: Status,
        code: Option<i32>,
        reason: Option<String>,
        now: u64,
    ) -> Action {
        let ran = status != Status::Skipped;
        let s = &self.st[i];
        Action::Emit(Record::End {
            step: self.nodes[i].id.clone(),
            status,
            code,
            ms: if ran {
                now.saturating_sub(s.started_ms)
            } else {
                0
            },
            attempt: if ran { s.attempt.max(1) } else { 0 },
            reason,
        })
    }

    /// The outermost enclosing group of `i` whose deadline has passed, if any; every such group
    /// is marked timed out.
    fn timed_out_scope(&mut self, i: usize, now: u64) -> Option<usize> {
        let mut outermost = None;
        let mut g = i;
        while g != 0 {
            g = self.nodes[g].parent;
            if self.st[g].deadline_ms.is_some_and(|d| now >= d) {
                self.st[g].timed_out = true;
                outermost = Some(g);
            }
        }
        outermost
    }

    fn scope_failed(&self, i: usize) -> bool {
        let mut g = i;
        while g != 0 {
            g = self.nodes[g].parent;
            if self.st[g].failed || self.st[g].timed_out {
                return true;
            }
        }
        false
    }

    fn after(&self, i: usize) -> Cursor {
        if i == 0 {
            return Cursor::Finished;
        }
        match self.nodes[i].next_sibling {
            Some(s) => Cursor::Enter(s),
            None => Cursor::Leave(self.nodes[i].parent),
        }
    }

    /// The container that reports a node: a leaf's own, a group's last (where it ends).
    fn owner(&self, i: usize) -> u32 {
        match &self.nodes[i].leaf {
            Some(l) => l.container,
            None => self.nodes[i].last_container,
        }
    }

    /// Skips a subtree: this container reports the nodes it owns (and those of containers that
    /// already ended); nodes of later containers are left `skipPending` for them to report, so
    /// each container's log holds its own steps only.
    fn skip_subtree(&mut self, i: usize, reason: &str, out: &mut Vec<Action>) {
        // Post-order, like a group's end coming after its children's.
        for c in self.nodes[i].children.clone() {
            self.skip_subtree(c, reason, out);
        }
        let phase = self.st[i].phase;
        if phase != Phase::Pending && phase != Phase::SkipPending {
            return;
        }
        // A reason saved by the container that decided the skip wins.
        let reason = self.st[i]
            .reason
            .take()
            .unwrap_or_else(|| reason.to_string());
        if self.owner(i) > self.group {
            self.st[i].phase = Phase::SkipPending;
            self.st[i].reason = Some(reason);
            return;
        }
        self.st[i].phase = Phase::Skipped;
        out.push(self.end_record(i, Status::Skipped, None, Some(reason), 0));
        self.reported.push(i);
    }

    fn start_attempt(&mut self, i: usize, attempt: u32, now: u64, out: &mut Vec<Action>) {
        let n = &self.nodes[i];
        let Some(leaf) = n.leaf.as_ref() else {
            return;
        };
        let mut deadline = n.timeout_ms.map(|t| now.saturating_add(t));
        let mut g = i;
        while g != 0 {
            g = self.nodes[g].parent;
            if let Some(d) = self.st[g].deadline_ms {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        }
        let mut env = Vec::new();
        // Environment: the workflow's, then each enclosing group's, then the leaf's.
        let mut chain = vec![i];
        let mut g = i;
        while g != 0 {
            g = self.nodes[g].parent;
            chain.push(g);
        }
        for &a in chain.iter().rev() {
            env.extend(self.nodes[a].env.iter().cloned());
        }
        let launch = Launch {
            node: i,
            step: n.id.clone(),
            attempt,
            argv: leaf.argv.clone(),
            env,
            working_dir: leaf.working_dir.clone(),
            uid: leaf.uid,
            gid: leaf.gid,
            grace_ms: n.grace_ms,
            deadline,
        };
        // Saved (as running) before its start is printed and it is spawned: an init killed
        // from here on leaves a step the next init reports aborted.
        out.push(Action::Save);
        out.push(Action::Emit(Record::Start {
            step: n.id.clone(),
            name: n.name.clone(),
            attempt,
        }));
        out.push(Action::Spawn(launch));
        let s = &mut self.st[i];
        s.phase = Phase::Running;
        s.attempt = attempt;
        s.started_ms = now;
        self.running = Some(Running {
            node: i,
            stopping: Stopping::No,
        });
    }

    /// Walks the tree from the cursor until a leaf is spawned or this container is done.
    fn advance(&mut self, now: u64, out: &mut Vec<Action>) {
        loop {
            match self.cursor {
                Cursor::Finished => {
                    let status = self.workflow_status();
                    out.push(Action::Save);
                    out.push(Action::Emit(Record::Done {
                        status,
                        ms: now.saturating_sub(self.st[0].started_ms),
                        last: self.last,
                    }));
                    out.push(Action::Exit(match (self.last, status) {
                        (false, _) | (true, Status::Passed) => 0,
                        (true, Status::Aborted) => EXIT_ABORTED,
                        (true, _) => EXIT_FAILED,
                    }));
                    return;
                }
                Cursor::Leave(g) => {
                    if g == 0 || self.owner(g) > self.group {
                        // The workflow's end is `done`; a group with parts left for a later
                        // container (skipped ones, for it to report) ends there.
                        self.cursor = Cursor::Finished;
                        continue;
                    }
                    let s = &self.st[g];
                    let (mut status, mut reason) = if s.timed_out {
                        (
                            Status::Timeout,
                            Some(format!(
                                "timed out after {}",
                                fmt_ms(self.nodes[g].timeout_ms.unwrap_or(0))
                            )),
                        )
                    } else if s.failed {
                        (Status::Failed, None)
                    } else {
                        (Status::Passed, None)
                    };
                    if self.nodes[g].negative && status != Status::Timeout {
                        status = if status == Status::Passed {
                            reason = Some("expected a failure, all steps passed".into());
                            Status::Failed
                        } else {
                            Status::Passed
                        };
                    }
                    self.end_node(g, status, None, reason, now, out);
                    self.cursor = self.after(g);
                }
                Cursor::Enter(i) => {
                    let phase = self.st[i].phase;
                    if phase.status().is_some() {
                        self.cursor = self.after(i);
                        continue;
                    }
                    let n = &self.nodes[i];
                    if phase == Phase::Running {
                        // A group entered by an earlier container (or the workflow itself).
                        self.cursor = match n.children.first() {
                            Some(&c) => Cursor::Enter(c),
                            None => Cursor::Leave(i),
                        };
                        continue;
                    }
                    if n.first_container > self.group {
                        // Leaves are in container order: all that is left belongs to later ones.
                        self.cursor = Cursor::Finished;
                        continue;
                    }
                    if phase == Phase::SkipPending {
                        // Skipped by an earlier container: report our part of it.
                        out.push(Action::Save);
                        self.skip_subtree(i, "skipped", out);
                        self.cursor = self.after(i);
                        continue;
                    }
                    let (last_container, condition) = (n.last_container, n.condition);
                    let skip = if self.aborted {
                        Some("the workflow was aborted".to_string())
                    } else if last_container < self.group {
                        Some(format!(
                            "container {last_container} ended before this step ran"
                        ))
                    } else if self.timed_out_scope(i, now).is_some() {
                        Some("an enclosing group timed out".to_string())
                    } else {
                        let failed = self.scope_failed(i);
                        match condition {
                            Condition::Always => None,
                            Condition::Never => Some("condition: never".to_string()),
                            Condition::Passed if failed => {
                                Some("condition: passed, and a step failed".to_string())
                            }
                            Condition::Failed if !failed => {
                                Some("condition: failed, and no step failed".to_string())
                            }
                            _ => None,
                        }
                    };
                    if let Some(reason) = skip {
                        out.push(Action::Save);
                        self.skip_subtree(i, &reason, out);
                        self.cursor = self.after(i);
                        continue;
                    }
                    let n = &self.nodes[i];
                    if n.leaf.is_some() {
                        self.start_attempt(i, 1, now, out);
                        return;
                    }
                    // A group: start it, with its deadline bounding all its children.
                    out.push(Action::Save);
                    out.push(Action::Emit(Record::Start {
                        step: n.id.clone(),
                        name: n.name.clone(),
                        attempt: 1,
                    }));
                    let next = match n.children.first() {
                        Some(&c) => Cursor::Enter(c),
                        None => Cursor::Leave(i),
                    };
                    let deadline = n.timeout_ms.map(|t| now.saturating_add(t));
                    let s = &mut self.st[i];
                    s.phase = Phase::Running;
                    s.started_ms = now;
                    s.attempt = 1;
                    s.deadline_ms = deadline;
                    self.cursor = next;
                }
            }
        }
    }
}

fn add_children(
    nodes: &mut Vec<Node>,
    parent: usize,
    steps: &[stepinit_protocol::Step],
    path: &str,
    id_prefix: &str,
    shell: &str,
    last_container: &mut u32,
) -> Result<(), BuildError> {
    let mut prev: Option<usize> = None;
    for (k, s) in steps.iter().enumerate() {
        let path = format!("{path}[{k}]");
        let id =
            s.id.clone()
                .unwrap_or_else(|| format!("{id_prefix}{}", k + 1));
        let idx = nodes.len();
        let leaf = if s.steps.is_empty() {
            let container = s.container.unwrap_or(0);
            if container < *last_container {
                return Err(BuildError {
                    path: format!("{path}.container"),
                    message: format!(
                        "container {container} after a step of container {}: containers run in order",
                        *last_container
                    ),
                });
            }
            *last_container = container;
            let argv = match &s.shell {
                Some(script) => vec![
                    shell.to_string(),
                    "-e".to_string(),
                    "-c".to_string(),
                    script.clone(),
                ],
                None => s.command.clone(),
            };
            Some(Leaf {
                argv,
                shell: s.shell.is_some(),
                working_dir: s.working_dir.clone(),
                uid: s.run_as_user,
                gid: s.run_as_group,
                container,
            })
        } else {
            None
        };
        let (first, last) = leaf
            .as_ref()
            .map_or((u32::MAX, 0), |l| (l.container, l.container));
        nodes.push(Node {
            id: id.clone(),
            name: s.name.clone(),
            parent,
            children: vec![],
            next_sibling: None,
            leaf,
            env: s
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            condition: s.condition,
            negative: s.negative,
            optional: s.optional,
            timeout_ms: s.timeout_ms,
            grace_ms: s.grace_ms.unwrap_or(DEFAULT_GRACE_MS),
            retry: s.retry.as_ref().map(|r| (r.count, r.until)),
            first_container: first,
            last_container: last,
        });
        if let Some(p) = prev {
            nodes[p].next_sibling = Some(idx);
        }
        nodes[parent].children.push(idx);
        prev = Some(idx);
        if !s.steps.is_empty() {
            // Group working directories are not inherited: only leaves run somewhere.
            add_children(
                nodes,
                idx,
                &s.steps,
                &format!("{path}.steps"),
                &format!("{id}."),
                shell,
                last_container,
            )?;
        }
        // Propagate the container span upwards.
        let (f, l) = (nodes[idx].first_container, nodes[idx].last_container);
        let p = &mut nodes[parent];
        p.first_container = p.first_container.min(f);
        p.last_container = p.last_container.max(l);
    }
    Ok(())
}

/// FNV-1a over the tree's ids, shapes and containers, as hex.
fn fingerprint(nodes: &[Node]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    };
    for n in nodes {
        eat(n.id.as_bytes());
        eat(&(n.parent as u64).to_le_bytes());
        eat(&n.first_container.to_le_bytes());
        if let Some(l) = &n.leaf {
            // The spec's own words only: each container resolves the shell for itself.
            for a in l.argv.iter().skip(usize::from(l.shell)) {
                eat(a.as_bytes());
            }
        }
    }
    format!("{h:016x}-{}", nodes.len())
}

/// `1500` -> `1.5s`, `2000` -> `2s`, `250` -> `250ms`.
pub fn fmt_ms(ms: u64) -> String {
    let (secs, frac) = (ms / 1000, ms % 1000);
    if secs == 0 {
        format!("{ms}ms")
    } else if frac == 0 {
        format!("{secs}s")
    } else {
        let f = format!("{frac:03}");
        format!("{secs}.{}s", f.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the simulated leaf does.
    #[derive(Clone)]
    enum Out {
        Exit(i32),
        /// Never exits by itself: the deadline fires, then the stop sequence ends it (143).
        Hang,
        /// Cannot be spawned.
        NoProgram,
        /// SIGTERM arrives to the init while it runs.
        Abort,
        /// The init is SIGKILLed while the step runs: the run ends with the state saved so far
        /// (exit code -1 in [`Run`]).
        Crash,
    }

    struct Run {
        log: Vec<String>,
        launches: Vec<Launch>,
        code: i32,
        state: State,
        reported: Vec<String>,
    }

    impl Run {
        /// The run so far: what was printed and spawned, and the state as last saved.
        fn of(m: &Machine, log: Vec<String>, launches: Vec<Launch>, code: i32) -> Run {
            Run {
                log,
                launches,
                code,
                state: m.state(),
                reported: m
                    .reported()
                    .map(|(id, st, _)| format!("{id}={st}"))
                    .collect(),
            }
        }
    }

    fn spec(json: &str) -> Spec {
        let s: Spec = serde_json::from_str(json).unwrap();
        s.validate().unwrap();
        s
    }

    fn fmt(r: &Record) -> String {
        match r {
            Record::Start { step, attempt, .. } => format!("S:{step}#{attempt}"),
            Record::End {
                step,
                status,
                code,
                attempt,
                ..
            } => match code {
                Some(c) => format!("E:{step}={status}/{c}#{attempt}"),
                None => format!("E:{step}={status}#{attempt}"),
            },
            Record::Done { status, last, .. } => {
                format!("D={status}{}", if *last { "!" } else { "" })
            }
        }
    }

    /// Drives the machine like the driver does; `outcome` picks each attempt's behaviour.
    fn drive(
        s: &Spec,
        group: u32,
        state: Option<State>,
        mut outcome: impl FnMut(&Launch) -> Out,
    ) -> Run {
        let mut m = Machine::new(s, group, "/bin/sh", state).unwrap();
        let mut now = 1000;
        let mut actions = m.start(now);
        let mut log = Vec::new();
        let mut launches = Vec::new();
        let mut pending_stop = false;
        loop {
            let mut next = None;
            for a in actions.drain(..) {
                match a {
                    Action::Emit(r) => log.push(fmt(&r)),
                    Action::Save => {}
                    Action::Stop => pending_stop = true,
                    Action::Exit(code) => return Run::of(&m, log, launches, code),
                    Action::Spawn(l) => {
                        launches.push(l.clone());
                        next = Some(l);
                    }
                }
            }
            if pending_stop {
                pending_stop = false;
                now += 5;
                actions = m.handle(Event::Exited { code: 143 }, now);
                continue;
            }
            let l = next.expect("the machine neither spawned nor exited");
            now += 10;
            actions = match outcome(&l) {
                Out::Exit(code) => m.handle(Event::Exited { code }, now),
                Out::NoProgram => m.handle(
                    Event::SpawnFailed {
                        code: Some(127),
                        reason: "program not found: x".into(),
                    },
                    now,
                ),
                Out::Hang => {
                    now = l.deadline.expect("a hanging step needs a deadline");
                    m.handle(Event::Deadline, now)
                }
                Out::Abort => m.handle(Event::Abort, now),
                Out::Crash => return Run::of(&m, log, launches, -1),
            };
        }
    }

    /// Outcome by the first argv word: `ok` exits 0, `fail` 1, `hang`, `missing`, `abort`, a number.
    fn by_name(l: &Launch) -> Out {
        match l.argv[0].as_str() {
            "ok" => Out::Exit(0),
            "fail" => Out::Exit(1),
            "hang" => Out::Hang,
            "missing" => Out::NoProgram,
            "abort" => Out::Abort,
            n => Out::Exit(n.parse().unwrap()),
        }
    }

    /// Single-container workflows, each outcome picked by [`by_name`]: what the spec says, the
    /// records it must give (space-separated, as [`fmt`] writes them) and the exit code.
    #[test]
    fn single_container_workflows() {
        let cases: &[(&str, &str, &str, i32)] = &[
            (
                "conditions follow the scope results",
                r#"{"version":1,"steps":[
                {"command":["ok"]},
                {"command":["fail"]},
                {"command":["ok"]},
                {"command":["ok"],"condition":"failed"},
                {"command":["ok"],"condition":"always"},
                {"command":["ok"],"condition":"never"}]}"#,
                "S:1#1 E:1=passed/0#1 S:2#1 E:2=failed/1#1 E:3=skipped#0 S:4#1 E:4=passed/0#1 \
                 S:5#1 E:5=passed/0#1 E:6=skipped#0 D=failed!",
                EXIT_FAILED,
            ),
            (
                "a failed condition is skipped when all passed",
                r#"{"version":1,"steps":[{"command":["ok"]},{"command":["ok"],"condition":"failed"}]}"#,
                "S:1#1 E:1=passed/0#1 E:2=skipped#0 D=passed!",
                0,
            ),
            (
                "negative inverts exit codes but not timeouts",
                r#"{"version":1,"steps":[
                {"command":["3"],"negative":true},
                {"command":["hang"],"negative":true,"timeoutMs":50,"condition":"always"},
                {"command":["ok"],"negative":true,"condition":"always"}]}"#,
                "S:1#1 E:1=passed/3#1 S:2#1 E:2=timeout/143#1 S:3#1 E:3=failed/0#1 D=failed!",
                EXIT_FAILED,
            ),
            (
                "optional failures do not fail the parent",
                r#"{"version":1,"steps":[
                {"command":["fail"],"optional":true},
                {"steps":[{"command":["fail"],"optional":true},{"command":["ok"]}]},
                {"command":["ok"]}]}"#,
                "S:1#1 E:1=failed/1#1 S:2#1 S:2.1#1 E:2.1=failed/1#1 S:2.2#1 E:2.2=passed/0#1 \
                 E:2=passed#1 S:3#1 E:3=passed/0#1 D=passed!",
                0,
            ),
            (
                "spawn failures fail the step and are retried",
                r#"{"version":1,"steps":[{"command":["missing"],"retry":{"count":1}},
                {"command":["ok"],"condition":"always"}]}"#,
                "S:1#1 E:1=failed/127#1 S:1#2 E:1=failed/127#2 S:2#1 E:2=passed/0#1 D=failed!",
                EXIT_FAILED,
            ),
            (
                "nested groups derive their result and skip whole",
                r#"{"version":1,"steps":[
                {"id":"g","steps":[{"command":["ok"]},{"id":"h","steps":[{"command":["fail"]},{"command":["ok"]}]},{"command":["ok"],"condition":"always"}]},
                {"id":"k","steps":[{"command":["ok"]},{"command":["ok"]}]},
                {"id":"n","negative":true,"condition":"always","steps":[{"command":["fail"],"condition":"always"}]}]}"#,
                "S:g#1 S:g.1#1 E:g.1=passed/0#1 S:h#1 S:h.1#1 E:h.1=failed/1#1 E:h.2=skipped#0 \
                 E:h=failed#1 S:g.3#1 E:g.3=passed/0#1 E:g=failed#1 E:k.1=skipped#0 \
                 E:k.2=skipped#0 E:k=skipped#0 S:n#1 S:n.1#1 E:n.1=failed/1#1 E:n=passed#1 \
                 D=failed!",
                EXIT_FAILED,
            ),
            (
                // The group (25 ms) cuts the second attempt of g.1 and allows no third.
                "a timed-out attempt is retried, not past the group deadline",
                r#"{"version":1,"steps":[
                {"command":["hang"],"timeoutMs":10,"retry":{"count":1}},
                {"id":"g","timeoutMs":25,"condition":"always","steps":[{"command":["hang"],"timeoutMs":10,"retry":{"count":5},"condition":"always"}]}]}"#,
                "S:1#1 E:1=timeout/143#1 S:1#2 E:1=timeout/143#2 S:g#1 S:g.1#1 \
                 E:g.1=timeout/143#1 S:g.1#2 E:g.1=timeout/143#2 E:g=timeout#1 D=failed!",
                EXIT_FAILED,
            ),
            (
                "a leaf and its group reaching their deadlines at once: the group timed out",
                r#"{"version":1,"steps":[
                {"id":"g","timeoutMs":100,"steps":[{"command":["hang"],"timeoutMs":100}]}]}"#,
                "S:g#1 S:g.1#1 E:g.1=timeout/143#1 E:g=timeout#1 D=failed!",
                EXIT_FAILED,
            ),
            (
                "an optional group does not fail the workflow",
                r#"{"version":1,"steps":[
                {"id":"g","optional":true,"steps":[{"command":["fail"]}]},
                {"command":["ok"]}]}"#,
                "S:g#1 S:g.1#1 E:g.1=failed/1#1 E:g=failed#1 S:2#1 E:2=passed/0#1 D=passed!",
                0,
            ),
        ];
        for &(what, json, log, code) in cases {
            let r = drive(&spec(json), 0, None, by_name);
            let want: Vec<&str> = log.split_ascii_whitespace().collect();
            assert_eq!(r.log, want, "{what}");
            assert_eq!(r.code, code, "{what}");
        }
    }

    #[test]
    fn retry_until_passed_counts_attempts() {
        let s = spec(
            r#"{"version":1,"steps":[{"command":["x"],"retry":{"count":5}},
               {"command":["x"],"retry":{"count":1},"condition":"always"}]}"#,
        );
        let mut codes = vec![1, 1, 0, 2, 2].into_iter();
        let r = drive(&s, 0, None, |_| Out::Exit(codes.next().unwrap()));
        assert_eq!(
            r.log.join(" "),
            "S:1#1 E:1=failed/1#1 S:1#2 E:1=failed/1#2 S:1#3 E:1=passed/0#3 S:2#1 \
             E:2=failed/2#1 S:2#2 E:2=failed/2#2 D=failed!"
        );
        assert_eq!(
            r.launches.iter().map(|l| l.attempt).collect::<Vec<_>>(),
            [1, 2, 3, 1, 2]
        );
    }

    #[test]
    fn retry_until_failed_stops_at_the_first_failure() {
        let s = spec(
            r#"{"version":1,"steps":[{"command":["x"],"retry":{"count":9,"until":"failed"}}]}"#,
        );
        let mut codes = vec![0, 0, 4].into_iter();
        let r = drive(&s, 0, None, |_| Out::Exit(codes.next().unwrap()));
        assert_eq!(
            r.log.join(" "),
            "S:1#1 E:1=passed/0#1 S:1#2 E:1=passed/0#2 S:1#3 E:1=failed/4#3 \
             D=failed!"
        );
    }

    #[test]
    fn leaf_timeout_stops_and_reports() {
        let s =
            spec(r#"{"version":1,"steps":[{"command":["hang"],"timeoutMs":1500,"graceMs":7}]}"#);
        let mut m = Machine::new(&s, 0, "/bin/sh", None).unwrap();
        let a = m.start(100);
        let Some(Action::Spawn(l)) = a.last() else {
            panic!("{a:?}")
        };
        assert_eq!((l.deadline, l.grace_ms), (Some(1600), 7));
        assert_eq!(m.handle(Event::Deadline, 1600), [Action::Stop]);
        // A second deadline while stopping changes nothing.
        assert_eq!(m.handle(Event::Deadline, 1601), []);
        let a = m.handle(Event::Exited { code: 143 }, 1610);
        assert_eq!(
            a[1],
            Action::Emit(Record::End {
                step: "1".into(),
                status: Status::Timeout,
                code: Some(143),
                ms: 1510,
                attempt: 1,
                reason: Some("timed out after 1.5s".into())
            })
        );
        assert_eq!(a.last(), Some(&Action::Exit(EXIT_FAILED)));
    }

    #[test]
    fn group_timeout_bounds_children_and_skips_the_rest() {
        let s = spec(
            r#"{"version":1,"steps":[
            {"id":"g","timeoutMs":100,"steps":[{"command":["ok"],"timeoutMs":1000},{"command":["hang"]},{"command":["ok"],"condition":"always"}]},
            {"command":["ok"],"condition":"always"}]}"#,
        );
        let r = drive(&s, 0, None, by_name);
        assert_eq!(
            r.log.join(" "),
            "S:g#1 S:g.1#1 E:g.1=passed/0#1 S:g.2#1 E:g.2=timeout/143#1 \
             E:g.3=skipped#0 E:g=timeout#1 S:2#1 E:2=passed/0#1 D=failed!"
        );
        // The group's deadline (start 1000 + 100) caps the leaf's own (1000 + 1000).
        assert_eq!(r.launches[0].deadline, Some(1100));
        assert_eq!(r.launches[1].deadline, Some(1100));
    }

    #[test]
    fn abort_stops_the_step_and_skips_everything_after() {
        let s = spec(
            r#"{"version":1,"steps":[{"command":["ok"]},
            {"steps":[{"command":["abort"]},{"command":["ok"],"condition":"always"}]},
            {"command":["ok"],"condition":"always"}]}"#,
        );
        let r = drive(&s, 0, None, by_name);
        assert_eq!(
            r.log.join(" "),
            "S:1#1 E:1=passed/0#1 S:2#1 S:2.1#1 E:2.1=aborted/143#1 E:2.2=skipped#0 \
             E:2=failed#1 E:3=skipped#0 D=aborted!"
        );
        assert_eq!(r.code, EXIT_ABORTED);
        assert!(r.state.aborted);
    }

    /// The state is saved before a step's start or end is printed: an init killed in between (writing to a
    /// stalled stdout blocks) leaves the result in the state, not a printed `passed` that the
    /// next init would report again as `aborted`, failing the workflow.
    #[test]
    fn a_result_is_saved_before_it_is_printed() {
        let s = spec(r#"{"version":1,"steps":[{"command":["x"]},{"command":["y"]}]}"#);
        let mut m = Machine::new(&s, 0, "/bin/sh", None).unwrap();
        m.start(0);
        let a = m.handle(Event::Exited { code: 0 }, 5);
        let end = a
            .iter()
            .position(|x| matches!(x, Action::Emit(Record::End { step, .. }) if step == "1"));
        let save = a.iter().position(|x| *x == Action::Save);
        assert!(save < end && end.is_some(), "{a:?}");
        // And step 2 is saved as running before its start is printed.
        let start = a
            .iter()
            .position(|x| matches!(x, Action::Emit(Record::Start { .. })));
        let save = a.iter().rposition(|x| *x == Action::Save);
        assert!(save < start && end < save, "{a:?}");
    }

    #[test]
    fn abort_is_saved_at_once_and_stops_only_once() {
        let s = spec(r#"{"version":1,"steps":[{"command":["x"]}]}"#);
        let mut m = Machine::new(&s, 0, "/bin/sh", None).unwrap();
        m.start(0);
        assert_eq!(m.handle(Event::Abort, 5), [Action::Stop, Action::Save]);
        assert!(m.state().aborted);
        assert_eq!(m.handle(Event::Abort, 6), []);
        // A deadline during the stop does not turn the abort into a timeout.
        assert_eq!(m.handle(Event::Deadline, 7), []);
    }

    #[test]
    fn launch_resolves_shell_env_and_workdir() {
        let s = spec(
            r#"{"version":1,"env":[{"name":"A","value":"1"},{"name":"B","value":"1"}],
            "steps":[{"env":[{"name":"B","value":"2"}],"steps":[
              {"shell":"echo hi","workingDir":"/w","env":[{"name":"C","value":"3"}],"runAsUser":7,"runAsGroup":8}]}]}"#,
        );
        let r = drive(&s, 0, None, by_name_shell);
        let l = &r.launches[0];
        assert_eq!(l.argv, ["/bin/sh", "-e", "-c", "echo hi"]);
        assert_eq!(
            l.env,
            [("A", "1"), ("B", "1"), ("B", "2"), ("C", "3")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(l.working_dir.as_deref(), Some("/w"));
        assert_eq!((l.uid, l.gid, l.step.as_str()), (Some(7), Some(8), "1.1"));
        let mut s2 = s.clone();
        s2.shell = Some("/busybox/sh".into());
        let r = drive(&s2, 0, None, by_name_shell);
        assert_eq!(r.launches[0].argv[0], "/busybox/sh");
    }

    fn by_name_shell(_: &Launch) -> Out {
        Out::Exit(0)
    }

    const THREE: &str = r#"{"version":1,"containers":[{},{},{}],"steps":[
        {"command":["fail"],"container":0},
        {"id":"g","condition":"always","steps":[
            {"command":["ok"],"container":0,"condition":"always"},
            {"command":["ok"],"container":1},
            {"command":["ok"],"container":1,"condition":"always"},
            {"command":["ok"],"container":2,"condition":"always"}]},
        {"command":["ok"],"container":2,"condition":"failed"}]}"#;

    #[test]
    fn state_carries_conditions_and_groups_across_containers() {
        let s = spec(THREE);
        let r0 = drive(&s, 0, None, by_name);
        assert_eq!(
            r0.log.join(" "),
            "S:1#1 E:1=failed/1#1 S:g#1 S:g.1#1 E:g.1=passed/0#1 D=failed"
        );
        assert_eq!(r0.code, 0, "intermediate containers exit 0");
        // The state goes through JSON, as on disk.
        let json = serde_json::to_string(&r0.state).unwrap();
        let st: State = serde_json::from_str(&json).unwrap();
        let r1 = drive(&s, 1, Some(st), by_name);
        assert_eq!(
            r1.log.join(" "),
            "E:g.2=skipped#0 S:g.3#1 E:g.3=passed/0#1 D=failed"
        );
        assert_eq!(r1.code, 0);
        let r2 = drive(&s, 2, Some(r1.state), by_name);
        assert_eq!(
            r2.log.join(" "),
            "S:g.4#1 E:g.4=passed/0#1 E:g=passed#1 S:3#1 E:3=passed/0#1 D=failed!"
        );
        assert_eq!(r2.code, EXIT_FAILED);
        assert_eq!(r2.reported, ["g.4=passed", "g=passed", "3=passed"]);
    }

    #[test]
    fn a_killed_init_leaves_an_aborted_step_for_the_next_one() {
        let s = spec(THREE);
        let mut m = Machine::new(&s, 0, "/bin/sh", None).unwrap();
        let a = m.start(0);
        assert!(matches!(a.last(), Some(Action::Spawn(_))));
        // The init is SIGKILLed now: the last saved state says step 1 is running.
        let st = m.state();
        assert_eq!(st.nodes[1].phase, Phase::Running);
        let r1 = drive(&s, 1, Some(st.clone()), by_name);
        assert_eq!(
            r1.log.join(" "),
            "E:1=aborted#1 S:g#1 E:g.1=skipped#0 E:g.2=skipped#0 S:g.3#1 \
             E:g.3=passed/0#1 D=failed"
        );
        assert_eq!(
            first_reason(&s, 1, st).as_deref(),
            Some("the init of container 0 was killed while this step ran")
        );
    }

    /// The reason of the first record container `group` prints when it starts from `state`.
    fn first_reason(s: &Spec, group: u32, state: State) -> Option<String> {
        let mut m = Machine::new(s, group, "/bin/sh", Some(state)).unwrap();
        m.start(0).into_iter().find_map(|a| match a {
            Action::Emit(Record::End { reason, .. }) => reason,
            _ => None,
        })
    }

    #[test]
    fn an_abort_is_honoured_by_later_containers() {
        let s = spec(THREE);
        let r0 = drive(&s, 0, None, |_| Out::Abort);
        // The group is skipped by container 0; each container reports its own part of it.
        assert_eq!(
            r0.log.join(" "),
            "S:1#1 E:1=aborted/143#1 E:g.1=skipped#0 D=aborted"
        );
        assert_eq!(r0.code, 0);
        let r1 = drive(&s, 1, Some(r0.state), |_| {
            panic!("nothing runs after an abort")
        });
        assert_eq!(
            r1.log.join(" "),
            "E:g.2=skipped#0 E:g.3=skipped#0 D=aborted"
        );
        let r2 = drive(&s, 2, Some(r1.state), |_| {
            panic!("nothing runs after an abort")
        });
        assert_eq!(
            r2.log.join(" "),
            "E:g.4=skipped#0 E:g=skipped#0 E:3=skipped#0 D=aborted!"
        );
        assert_eq!(r2.code, EXIT_ABORTED);
    }

    #[test]
    fn a_skipped_group_is_reported_by_the_containers_that_own_its_parts() {
        let s = spec(
            r#"{"version":1,"containers":[{},{},{}],"steps":[
            {"command":["fail"],"container":0},
            {"id":"g","steps":[{"command":["ok"],"container":0},{"command":["ok"],"container":1,"condition":"always"},{"command":["ok"],"container":2}]},
            {"command":["ok"],"container":2,"condition":"always"}]}"#,
        );
        let r0 = drive(&s, 0, None, by_name);
        assert_eq!(
            r0.log.join(" "),
            "S:1#1 E:1=failed/1#1 E:g.1=skipped#0 D=failed"
        );
        let r1 = drive(&s, 1, Some(r0.state), by_name);
        assert_eq!(r1.log.join(" "), "E:g.2=skipped#0 D=failed");
        assert_eq!(
            first_reason(&s, 2, r1.state.clone()).as_deref(),
            Some("condition: passed, and a step failed")
        );
        let r2 = drive(&s, 2, Some(r1.state), by_name);
        assert_eq!(
            r2.log.join(" "),
            "E:g.3=skipped#0 E:g=skipped#0 S:3#1 E:3=passed/0#1 D=failed!"
        );
    }

    #[test]
    fn a_state_fits_containers_that_resolve_the_shell_differently() {
        let s = spec(
            THREE
                .replace(
                    r#"{"command":["ok"],"container":1}"#,
                    r#"{"shell":"true","container":1}"#,
                )
                .as_str(),
        );
        let st = Machine::new(&s, 0, "/bin/sh", None).unwrap().state();
        assert!(Machine::new(&s, 1, "/shared/sh", Some(st)).is_ok());
    }

    #[test]
    fn state_of_another_spec_is_refused() {
        let s = spec(THREE);
        let r0 = drive(&s, 0, None, by_name);
        let other = spec(r#"{"version":1,"steps":[{"command":["ok"]}]}"#);
        let e = Machine::new(&other, 0, "sh", Some(r0.state)).unwrap_err();
        assert_eq!(e.path, "state.spec");
    }

    #[test]
    fn containers_must_be_in_order_and_exist() {
        let s = spec(
            r#"{"version":1,"containers":[{},{}],"steps":[{"command":["a"],"container":1},{"steps":[{"command":["b"],"container":0}]}]}"#,
        );
        let e = Machine::new(&s, 0, "sh", None).unwrap_err();
        assert_eq!(e.path, "steps[1].steps[0].container");
        let s = spec(r#"{"version":1,"steps":[{"command":["a"]}]}"#);
        assert_eq!(Machine::new(&s, 1, "sh", None).unwrap_err().path, "--group");
    }

    /// A tiny deterministic generator (no dependency): xorshift.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn random_steps(
        rng: &mut Rng,
        depth: u32,
        container: &mut u32,
        max_c: u32,
    ) -> Vec<serde_json::Value> {
        let n = 1 + rng.next(3);
        let mut v = Vec::new();
        for _ in 0..n {
            let cond = ["passed", "failed", "always", "never"][rng.next(4) as usize];
            let mut step = if depth < 3 && rng.next(3) == 0 {
                serde_json::json!({"steps": random_steps(rng, depth + 1, container, max_c)})
            } else {
                if *container < max_c && rng.next(4) == 0 {
                    *container += 1;
                }
                let prog = ["ok", "fail", "hang", "missing", "3"][rng.next(5) as usize];
                let mut l = serde_json::json!({"command": [prog], "container": *container});
                if rng.next(3) == 0 {
                    let until = ["passed", "failed"][rng.next(2) as usize];
                    l["retry"] = serde_json::json!({"count": rng.next(3), "until": until});
                }
                l["timeoutMs"] = serde_json::json!(5 + rng.next(20));
                l
            };
            step["condition"] = serde_json::json!(cond);
            step["negative"] = serde_json::json!(rng.next(5) == 0);
            step["optional"] = serde_json::json!(rng.next(4) == 0);
            if rng.next(5) == 0 {
                step["timeoutMs"] = serde_json::json!(10 + rng.next(40));
            }
            v.push(step);
        }
        v
    }

    /// Random trees over three containers, random outcomes, an abort now and then, the state
    /// going through JSON between containers: every step gets exactly one final end record,
    /// from the container that owns it, after its start; starts and ends nest; the last
    /// container's exit code matches its `done`.
    #[test]
    fn random_workflows_report_every_step_once_from_its_owner() {
        let (mut crashes, mut aborts, mut runs) = (0, 0, 0);
        for seed in 1..1500u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut container = 0;
            let steps = random_steps(&mut rng, 0, &mut container, 2);
            let json =
                serde_json::json!({"version": 1, "containers": [{}, {}, {}], "steps": steps});
            let s: Spec = serde_json::from_value(json.clone()).unwrap();
            if s.validate().is_err() {
                continue;
            }
            let abort_at = if rng.next(4) == 0 {
                Some(rng.next(6))
            } else {
                None
            };
            // The init of container 0 or 1 is killed at its n-th spawn, now and then.
            let crash_at = if rng.next(4) == 0 {
                Some((rng.next(2) as u32, 1 + rng.next(3)))
            } else {
                None
            };
            let mut crashed = false;
            let mut count = 0;
            let mut state = None;
            // Final end per step: (container, global order).
            let mut ends: std::collections::HashMap<String, (u32, usize)> = Default::default();
            let mut seq = 0;
            let mut last = None;
            for g in 0..3u32 {
                let mut spawns = 0;
                let r = drive(&s, g, state.take(), |l| {
                    count += 1;
                    spawns += 1;
                    if crash_at == Some((g, spawns)) {
                        return Out::Crash;
                    }
                    if Some(count) == abort_at {
                        return Out::Abort;
                    }
                    by_name(l)
                });
                crashed |= r.code == -1;
                crashes += usize::from(r.code == -1);
                aborts += usize::from(r.log.last().is_some_and(|d| d.starts_with("D=aborted")));
                let mut open: Vec<String> = Vec::new();
                for rec in &r.log {
                    if let Some(rest) = rec.strip_prefix("S:") {
                        let (id, attempt) = rest.split_once('#').unwrap();
                        let id = id.to_string();
                        if attempt != "1" {
                            // A retry: the previous attempt's end, in this container, was not final.
                            assert_eq!(ends.remove(&id).map(|e| e.0), Some(g), "seed {seed}: {id}");
                        }
                        assert!(
                            !ends.contains_key(&id),
                            "seed {seed}: {id} starts after its end"
                        );
                        open.push(id);
                    } else if let Some(rest) = rec.strip_prefix("E:") {
                        let (id, status) = rest.split_once('=').unwrap();
                        if open.last().map(String::as_str) == Some(id) {
                            open.pop();
                        }
                        let _ = status;
                        seq += 1;
                        let prev = ends.insert(id.to_string(), (g, seq));
                        if let Some((pg, _)) = prev {
                            // Only retried attempts end more than once, all in one container.
                            assert_eq!(pg, g, "seed {seed}: {id} ended in two containers");
                        }
                    }
                }
                state =
                    Some(serde_json::from_str(&serde_json::to_string(&r.state).unwrap()).unwrap());
                last = Some(r);
            }
            let m = Machine::new(&s, 0, "/bin/sh", None).unwrap();
            for i in 1..m.nodes.len() {
                let id = &m.nodes[i].id;
                let Some((g, _)) = ends.get(id) else {
                    panic!("seed {seed}: step {id} never ended\n{json}");
                };
                // After a crash, the next container reports what the killed one left.
                let what = format!("seed {seed}: {id} reported by container {g}\n{json}");
                if crashed {
                    assert!(*g >= m.owner(i), "{what}");
                } else {
                    assert_eq!(*g, m.owner(i), "{what}");
                }
                let p = m.nodes[i].parent;
                if p != 0 {
                    assert!(
                        ends[id].1 < ends[&m.nodes[p].id].1,
                        "seed {seed}: {id} ends after its group\n{json}"
                    );
                }
            }
            let r = last.unwrap();
            assert!(
                r.code >= 0,
                "seed {seed}: the last container never crashes here"
            );
            runs += 1;
            let done = r.log.last().unwrap();
            let want = match done.as_str() {
                "D=passed!" => 0,
                "D=failed!" => EXIT_FAILED,
                "D=aborted!" => EXIT_ABORTED,
                other => panic!("seed {seed}: last record {other}"),
            };
            assert_eq!(r.code, want, "seed {seed}");
        }
        // The test exercises what it claims to.
        assert!(
            runs > 1000 && crashes > 40 && aborts > 100,
            "{runs} {crashes} {aborts}"
        );
    }

    #[test]
    fn fmt_ms_is_short() {
        assert_eq!(fmt_ms(250), "250ms");
        assert_eq!(fmt_ms(2000), "2s");
        assert_eq!(fmt_ms(1500), "1.5s");
    }
}
