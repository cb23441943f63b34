//! The sequencing logic of spec mode, as a pure state machine.
//!
//! Inputs are [`Event`]s (the leaf was spawned, exited, could not be spawned, reached its
//! deadline, or the workflow is aborted) with an injected monotonic "now" in milliseconds;
//! outputs are [`Action`]s (spawn a leaf, start its stop sequence, journal an entry, emit a
//! record, exit). No process, clock or file is touched here, so every rule is unit-tested without
//! processes.
//!
//! The walk: the spec's tree in order. A node is entered once (condition evaluated, `start`
//! emitted), a leaf runs (attempt after attempt while `retry` allows), a group ends when its last
//! child has.
//!
//! Every change of the state is an [`Entry`], applied by one function ([`Machine::replay`] for a
//! journal read back, the same code live), so the state an init continues from is exactly the
//! one the earlier init had. Live, each entry comes out as [`Action::Journal`] before the records
//! it stands for: a record is never printed before the journal has it (write-ahead), and an init
//! that continues a journal prints the records of its last entry again, since its writer may have
//! died before printing them. Readers drop such repeats (the same start or end of the same
//! attempt). Across containers the state carries every node's phase and every scope's "failed so
//! far", so the init of container N continues where the init of N-1 stopped.

use serde::{Deserialize, Serialize};
use stepinit_protocol::expr::Context;
use stepinit_protocol::spec::{Computed, Condition, Field, Spec, Until};
use stepinit_protocol::{Record, Status};

/// Default time between SIGTERM and SIGKILL when a step is stopped.
pub const DEFAULT_GRACE_MS: u64 = 10_000;

/// Exit codes of spec mode.
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_ABORTED: i32 = 130;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The leaf of the last [`Action::Spawn`] runs: its process exists.
    Spawned,
    /// The leaf's main process exited with this code (128+N: signal N) and its whole process tree
    /// is gone. After a [`Action::Stop`], this is "the stop sequence finished".
    Exited { code: i32 },
    /// The leaf of the last [`Action::Spawn`] could not be started (program not found, working
    /// directory, ...).
    SpawnFailed { code: Option<i32>, reason: String },
    /// The deadline given with [`Action::Spawn`] was reached.
    Deadline,
    /// SIGTERM/SIGINT: stop the running leaf (or do not start the one being spawned), skip
    /// everything after it.
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
    /// The attempt fails before it starts, for this reason (an expression of its condition or
    /// of a computed field could not be evaluated): report [`Event::SpawnFailed`] at once.
    pub fail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this attempt, then report [`Event::Spawned`] or [`Event::SpawnFailed`] (or
    /// [`Event::Abort`], when a signal arrived before it could start).
    Spawn(Launch),
    /// Start the stop sequence of the running leaf; an [`Event::Exited`] follows when it is done.
    Stop,
    /// Append this entry to the journal (with `--state`) before doing the actions after it.
    Journal(Entry),
    Emit(Record),
    Exit(i32),
}

/// One change of the state, as the journal keeps it (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A node started: an attempt of a leaf (once its process exists), a group entered, or the
    /// workflow itself (node 0). `at`: monotonic ms.
    Start { node: usize, attempt: u32, at: u64 },
    /// A node ended with this result; `fin` is false for a leaf's attempt that another one
    /// follows. An end whose attempt has no start: that attempt never began.
    End {
        node: usize,
        status: Status,
        code: Option<i32>,
        ms: u64,
        attempt: u32,
        fin: bool,
        reason: Option<String>,
    },
    /// A leaf whose attempt ended with a retry to follow keeps that attempt's result as final:
    /// the container that runs it ended before the next attempt began. Prints nothing.
    Settle { node: usize },
    /// The subtree is skipped: this container reports the nodes it owns (and those of containers
    /// that already ended), later ones are left `skipPending` for their owners to report.
    Skip { node: usize, reason: String },
    /// The group's deadline has passed.
    TimedOut { node: usize },
    /// SIGTERM/SIGINT reached an init: everything not yet run is skipped.
    Abort,
    /// The state this init was given failed verification: the workflow fails, with this reason.
    Taint { reason: String },
    /// This container's init has reported all its steps (the journal's seal).
    Done { status: Status, ms: u64 },
}

/// A node's phase, persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Pending,
    /// Skipped (a skipped group, an abort) by an earlier container; the container that owns the
    /// node reports it (with the saved reason).
    SkipPending,
    Running,
    /// A leaf's attempt ended (`last`, `code`) and another attempt is due.
    Retrying,
    Passed,
    Failed,
    Skipped,
    Timeout,
    Aborted,
}

impl Phase {
    pub fn status(self) -> Option<Status> {
        Some(match self {
            Phase::Pending | Phase::SkipPending | Phase::Running | Phase::Retrying => return None,
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
    /// The result of a `retrying` leaf's last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<StatusName>,
    /// Why a `skipPending` node is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A [`Status`] as the state file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    Passed,
    Failed,
    Skipped,
    Timeout,
    Aborted,
}

impl From<Status> for StatusName {
    fn from(s: Status) -> Self {
        match s {
            Status::Passed => StatusName::Passed,
            Status::Failed => StatusName::Failed,
            Status::Skipped => StatusName::Skipped,
            Status::Timeout => StatusName::Timeout,
            Status::Aborted => StatusName::Aborted,
        }
    }
}

impl From<StatusName> for Status {
    fn from(s: StatusName) -> Self {
        match s {
            StatusName::Passed => Status::Passed,
            StatusName::Failed => Status::Failed,
            StatusName::Skipped => Status::Skipped,
            StatusName::Timeout => Status::Timeout,
            StatusName::Aborted => Status::Aborted,
        }
    }
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
            last: None,
            reason: None,
        }
    }
}

/// Version of the state format (the journal's snapshot).
pub const STATE_VERSION: u32 = 2;

/// Everything the next container's init needs: the snapshot at the head of each container's
/// journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Identifies the spec (ids, shape, containers): a state never applies to another spec.
    pub spec: String,
    /// SIGTERM/SIGINT reached an init: everything not yet run is skipped.
    #[serde(default)]
    pub aborted: bool,
    /// Why the workflow fails whatever its steps did (a state that failed verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint: Option<String>,
    /// The container whose init wrote this state.
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
    /// Fields computed when an attempt starts.
    computed: Vec<Computed>,
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
/// tree built in [`Machine::new`] or from entries checked by [`Machine::replay`], and `st` has
/// one entry per node (a snapshot of another length is refused), so the indexing below cannot
/// panic.
#[derive(Debug, Clone)]
pub struct Machine {
    nodes: Vec<Node>,
    st: Vec<NodeState>,
    fingerprint: String,
    aborted: bool,
    taint: Option<String>,
    group: u32,
    count: u32,
    cursor: Cursor,
    running: Option<Running>,
    /// The leaf and attempt of the last [`Action::Spawn`], until it is spawned or abandoned.
    launching: Option<(usize, u32)>,
    /// This container's seal was replayed: its init already ran to its end, with this result.
    finished: Option<Status>,
    /// Run without a state (no `--state`): earlier containers' steps are unknown, not lost.
    stateless: bool,
    /// Entries of this container's own journal were replayed: its init was restarted.
    restarted: bool,
    /// Nodes whose final end record this init emitted (for the termination summary).
    reported: Vec<usize>,
    /// The init's own environment, under the steps': what `env.NAME` reads in expressions.
    base_env: Vec<(String, String)>,
}

/// What an expression of node `node` reads: the scope's status, the node's environment.
struct Cx<'a> {
    passed: bool,
    env: &'a [(String, String)],
    base: &'a [(String, String)],
}

impl Context for Cx<'_> {
    fn passed(&self) -> bool {
        self.passed
    }
    fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .chain(self.base.iter().rev())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn output(&self, _step: &str, _key: &str) -> Option<&str> {
        None
    }
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
    pub fn new(spec: &Spec, group: u32, shell: &str) -> Result<Machine, BuildError> {
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
        let mut b = Builder {
            nodes: &mut nodes,
            shell,
            last_container: &mut last_container,
        };
        b.add_children(0, &spec.steps, "steps", "")?;
        let count = spec.container_count() as u32;
        if group >= count {
            return Err(BuildError {
                path: "--group".into(),
                message: format!("container {group} does not exist (spec has {count})"),
            });
        }
        let fingerprint = fingerprint(&nodes);
        Ok(Machine {
            st: vec![NodeState::pending(); nodes.len()],
            nodes,
            fingerprint,
            aborted: false,
            taint: None,
            group,
            count,
            cursor: Cursor::Enter(0),
            running: None,
            launching: None,
            finished: None,
            stateless: false,
            restarted: false,
            reported: Vec::new(),
            base_env: Vec::new(),
        })
    }

    /// The init's environment, which `env.NAME` in the spec's expressions reads (the steps'
    /// own variables over it).
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.base_env = env;
    }

    /// This container's own journal was found (its header at least): its init was killed and
    /// it runs again. See [`Machine::start`].
    pub fn restarted(&mut self) {
        self.restarted = true;
    }

    /// Without a state, this container runs as if it were the only one: the steps of earlier
    /// containers are reported skipped (nothing is known of them), not aborted.
    pub fn without_state(&mut self) {
        self.stateless = true;
    }

    /// Identifies the spec's tree: journals and snapshots name it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn group(&self) -> u32 {
        self.group
    }

    /// Nodes in the tree, the workflow itself included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The snapshot that heads this container's journal: the state as it is now.
    pub fn state(&self) -> State {
        State {
            version: STATE_VERSION,
            spec: self.fingerprint.clone(),
            aborted: self.aborted,
            taint: self.taint.clone(),
            container: self.group,
            nodes: self.st.clone(),
        }
    }

    /// Takes over a snapshot (from the head of a journal). Err: it does not fit this spec.
    pub fn restore(&mut self, s: State) -> Result<(), String> {
        if s.version != STATE_VERSION {
            return Err(format!("unsupported state version {}", s.version));
        }
        if s.spec != self.fingerprint || s.nodes.len() != self.nodes.len() {
            return Err("the state was written for another spec".into());
        }
        self.st = s.nodes;
        self.aborted = s.aborted;
        self.taint = s.taint;
        Ok(())
    }

    pub fn is_last(&self) -> bool {
        self.group + 1 == self.count
    }

    /// Whether this container's seal was replayed: its init already ran to its end.
    pub fn already_finished(&self) -> bool {
        self.finished.is_some()
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
        } else if self.st[0].failed || self.st[0].timed_out || self.taint.is_some() {
            Status::Failed
        } else {
            Status::Passed
        }
    }

    fn exit_code(&self, status: Status) -> i32 {
        match (self.is_last(), status) {
            (false, _) | (true, Status::Passed) => 0,
            (true, Status::Aborted) => EXIT_ABORTED,
            (true, _) => EXIT_FAILED,
        }
    }

    /// Applies an entry read back from the journal of container `from` and returns the records
    /// it stands for. Err: it cannot have been written by an init running this spec (an index out
    /// of range, a step that already ended): the journal is not to be trusted.
    pub fn replay(&mut self, from: u32, e: &Entry) -> Result<Vec<Record>, String> {
        let node = match e {
            Entry::Start { node, .. }
            | Entry::End { node, .. }
            | Entry::Settle { node }
            | Entry::Skip { node, .. }
            | Entry::TimedOut { node } => Some(*node),
            Entry::Abort | Entry::Taint { .. } | Entry::Done { .. } => None,
        };
        if let Some(i) = node {
            if i >= self.nodes.len() {
                return Err(format!("node {i} does not exist"));
            }
            let phase = self.st[i].phase;
            let ok = match e {
                Entry::Start { .. } | Entry::End { .. } => phase.status().is_none(),
                Entry::Settle { .. } => phase == Phase::Retrying,
                Entry::TimedOut { .. } => self.nodes[i].leaf.is_none(),
                _ => true,
            };
            if !ok {
                return Err(format!("node {i} cannot change from {phase:?} that way"));
            }
        }
        if from > self.group {
            return Err(format!("entry of container {from}, after this one"));
        }
        Ok(self.apply(e, from))
    }

    /// The one place the state changes: live (through [`Machine::commit`]) and on replay.
    fn apply(&mut self, e: &Entry, from: u32) -> Vec<Record> {
        let mut recs = Vec::new();
        match e {
            Entry::Start { node, attempt, at } => {
                let i = *node;
                let group_deadline = match self.nodes[i].leaf {
                    None => self.nodes[i].timeout_ms.map(|t| at.saturating_add(t)),
                    Some(_) => None,
                };
                let s = &mut self.st[i];
                s.phase = Phase::Running;
                s.attempt = *attempt;
                s.started_ms = *at;
                if self.nodes[i].leaf.is_none() {
                    s.deadline_ms = group_deadline;
                }
                if i != 0 {
                    recs.push(Record::Start {
                        step: self.nodes[i].id.clone(),
                        name: self.nodes[i].name.clone(),
                        attempt: *attempt,
                    });
                }
            }
            Entry::End {
                node,
                status,
                code,
                ms,
                attempt,
                fin,
                reason,
            } => {
                let i = *node;
                let s = &mut self.st[i];
                s.code = *code;
                s.attempt = *attempt;
                if *fin {
                    s.phase = Phase::done(*status);
                    s.last = None;
                    self.settled(i, *status);
                } else {
                    s.phase = Phase::Retrying;
                    s.last = Some((*status).into());
                }
                recs.push(Record::End {
                    step: self.nodes[i].id.clone(),
                    status: *status,
                    code: *code,
                    ms: *ms,
                    attempt: *attempt,
                    reason: reason.clone(),
                });
            }
            Entry::Settle { node } => {
                let i = *node;
                let status = self.st[i].last.take().map_or(Status::Failed, Status::from);
                self.st[i].phase = Phase::done(status);
                self.settled(i, status);
            }
            Entry::Skip { node, reason } => self.skip_subtree(*node, reason, from, &mut recs),
            Entry::TimedOut { node } => self.st[*node].timed_out = true,
            Entry::Abort => self.aborted = true,
            Entry::Taint { reason } => {
                // The workflow has failed: `passed` conditions skip from here on.
                self.taint = Some(reason.clone());
                self.st[0].failed = true;
            }
            Entry::Done { status, ms } => {
                if from == self.group {
                    self.finished = Some(*status);
                }
                recs.push(Record::Done {
                    status: *status,
                    ms: *ms,
                    last: from + 1 == self.count,
                    reason: self.taint.clone(),
                });
            }
        }
        recs
    }

    /// A node has its final result: a failure fails its parent's scope.
    fn settled(&mut self, i: usize, status: Status) {
        self.reported.push(i);
        if i != 0 && status.is_failure() && !self.nodes[i].optional {
            let p = self.nodes[i].parent;
            self.st[p].failed = true;
        }
    }

    /// Applies a live entry: journaled first, then the records it stands for.
    fn commit(&mut self, e: Entry, out: &mut Vec<Action>) {
        let recs = self.apply(&e, self.group);
        out.push(Action::Journal(e));
        out.extend(recs.into_iter().map(Action::Emit));
    }

    /// First call, after the journal (if any) was replayed: `taint` says why the journal could not
    /// be trusted. Recovers from a killed predecessor, then runs up to the first spawn.
    pub fn start(&mut self, now: u64, taint: Option<String>) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(status) = self.finished {
            // Its seal was replayed: this container already ran to its end; nothing runs twice.
            out.push(Action::Exit(self.exit_code(status)));
            return out;
        }
        // The reported list serves the summary of what this init prints, not what it replayed.
        self.reported.clear();
        // A restart means this container's init was killed; and its journal, which steps can
        // cut, may not say how far it got: a step whose failure was cut away must not run again
        // into a pass. So a restarted container fails the workflow ('passed' steps skip).
        let taint = taint.or_else(|| {
            self.restarted.then(|| {
                format!(
                    "the init of container {} was restarted (killed before its end): its steps do not run on as if nothing happened",
                    self.group
                )
            })
        });
        if let Some(reason) = taint.filter(|_| self.taint.is_none()) {
            self.commit(Entry::Taint { reason }, &mut out);
        }
        if self.st[0].phase == Phase::Pending {
            self.commit(
                Entry::Start {
                    node: 0,
                    attempt: 1,
                    at: now,
                },
                &mut out,
            );
        }
        // A leaf left `running` means the init running it was killed (OOM, node pressure) after
        // the step's process started: it is reported aborted here, counts as a failure, and the
        // walk goes on by the conditions.
        for i in 1..self.nodes.len() {
            let Some(l) = &self.nodes[i].leaf else {
                continue;
            };
            if self.st[i].phase == Phase::Running {
                let reason = format!(
                    "the init of container {} was killed before it recorded this step's end",
                    l.container
                );
                let s = &self.st[i];
                let e = Entry::End {
                    node: i,
                    status: Status::Aborted,
                    code: None,
                    ms: now.saturating_sub(s.started_ms),
                    attempt: s.attempt.max(1),
                    fin: true,
                    reason: Some(reason),
                };
                self.commit(e, &mut out);
            }
        }
        self.advance(now, &mut out);
        out
    }

    pub fn handle(&mut self, ev: Event, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Spawned => {
                let Some((i, attempt)) = self.launching.take() else {
                    return out;
                };
                let e = Entry::Start {
                    node: i,
                    attempt,
                    at: now,
                };
                self.commit(e, &mut out);
                self.running = Some(Running {
                    node: i,
                    stopping: Stopping::No,
                });
            }
            Event::SpawnFailed { code, reason } => {
                let Some((i, attempt)) = self.launching.take() else {
                    return out;
                };
                // The attempt began (its start is reported) and failed at once.
                let e = Entry::Start {
                    node: i,
                    attempt,
                    at: now,
                };
                self.commit(e, &mut out);
                self.attempt_ended(i, Status::Failed, code, Some(reason), now, &mut out);
            }
            Event::Abort => {
                if !self.aborted {
                    self.commit(Entry::Abort, &mut out);
                }
                if let Some(r) = self.running.as_mut() {
                    if r.stopping == Stopping::No {
                        out.push(Action::Stop);
                    }
                    r.stopping = Stopping::Abort;
                } else if let Some((i, attempt)) = self.launching.take() {
                    // Aborted between two steps: this attempt never begins.
                    let reason = if attempt > 1 {
                        format!("aborted before attempt {attempt} started")
                    } else {
                        "aborted before the step started".to_string()
                    };
                    let e = Entry::End {
                        node: i,
                        status: Status::Aborted,
                        code: None,
                        ms: 0,
                        attempt,
                        fin: true,
                        reason: Some(reason),
                    };
                    self.commit(e, &mut out);
                    self.cursor = self.after(i);
                    self.advance(now, &mut out);
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
                let (who, ms) = match self.timed_out_scope(node, now, &mut out) {
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
        }
        out
    }

    /// Whether leaf `i` may have another attempt after one that ended `status`.
    fn may_retry(&mut self, i: usize, status: Status, now: u64, out: &mut Vec<Action>) -> bool {
        let Some((count, until)) = &self.nodes[i].retry else {
            return false;
        };
        let count = *count;
        let satisfied = match until {
            Until::Passed => status == Status::Passed,
            Until::Failed => status.is_failure(),
            // `passed` is the attempt's own result here; an error ends the retries.
            Until::Expr(e) => {
                let env = self.chain_env(i);
                let cx = Cx {
                    passed: status == Status::Passed,
                    env: &env,
                    base: &self.base_env,
                };
                e.eval(&cx).map_or(true, |v| v.truthy())
            }
        };
        !satisfied
            && self.st[i].attempt <= count
            && status != Status::Aborted
            && !self.aborted
            && self.timed_out_scope(i, now, out).is_none()
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
        let more = self.may_retry(i, status, now, out);
        let s = &self.st[i];
        let e = Entry::End {
            node: i,
            status,
            code,
            ms: now.saturating_sub(s.started_ms),
            attempt: s.attempt,
            fin: !more,
            reason,
        };
        self.commit(e, out);
        if more {
            let next = self.st[i].attempt + 1;
            self.launch(i, next, None, now, out);
            return;
        }
        self.cursor = self.after(i);
        self.advance(now, out);
    }

    /// The outermost enclosing group of `i` whose deadline has passed, if any; each such group
    /// not yet marked is marked timed out.
    fn timed_out_scope(&mut self, i: usize, now: u64, out: &mut Vec<Action>) -> Option<usize> {
        let mut outermost = None;
        let mut g = i;
        while g != 0 {
            g = self.nodes[g].parent;
            if self.st[g].deadline_ms.is_some_and(|d| now >= d) {
                if !self.st[g].timed_out {
                    self.commit(Entry::TimedOut { node: g }, out);
                }
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

    /// Skips a subtree for container `by` (see [`Entry::Skip`]); pushes the end records of the
    /// nodes it reports.
    fn skip_subtree(&mut self, i: usize, reason: &str, by: u32, recs: &mut Vec<Record>) {
        // Post-order, like a group's end coming after its children's.
        for c in self.nodes[i].children.clone() {
            self.skip_subtree(c, reason, by, recs);
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
        if self.owner(i) > by {
            self.st[i].phase = Phase::SkipPending;
            self.st[i].reason = Some(reason);
            return;
        }
        self.st[i].phase = Phase::Skipped;
        self.reported.push(i);
        recs.push(Record::End {
            step: self.nodes[i].id.clone(),
            status: Status::Skipped,
            code: None,
            ms: 0,
            attempt: 0,
            reason: Some(reason),
        });
    }

    /// Asks for attempt `attempt` of leaf `i`; it starts (is journaled and reported) once spawned.
    /// With `fail`, the attempt fails at once with that reason instead.
    fn launch(
        &mut self,
        i: usize,
        attempt: u32,
        fail: Option<String>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
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
        let mut env = self.chain_env(i);
        let mut argv = leaf.argv.clone();
        let mut fail = fail;
        // Fields computed now, from the environment and the outputs of earlier steps.
        for c in &leaf.computed {
            let cx = Cx {
                passed: true,
                env: &env,
                base: &self.base_env,
            };
            match c.value.eval(&cx) {
                Ok(v) => {
                    let v = v.text();
                    match &c.field {
                        Field::Shell => {
                            if let Some(script) = argv.last_mut().filter(|_| leaf.shell) {
                                *script = v;
                            }
                        }
                        Field::Command(k) => {
                            if let Some(a) = argv.get_mut(*k as usize) {
                                *a = v;
                            }
                        }
                        Field::Env(name) => env.push((name.clone(), v)),
                    }
                }
                Err(e) => {
                    let what = match &c.field {
                        Field::Shell => "shell".to_string(),
                        Field::Command(k) => format!("command[{k}]"),
                        Field::Env(n) => format!("env {n}"),
                    };
                    fail.get_or_insert(format!("{what}: {e}"));
                }
            }
        }
        out.push(Action::Spawn(Launch {
            node: i,
            step: n.id.clone(),
            attempt,
            argv,
            env,
            working_dir: leaf.working_dir.clone(),
            uid: leaf.uid,
            gid: leaf.gid,
            grace_ms: n.grace_ms,
            deadline,
            fail,
        }));
        self.launching = Some((i, attempt));
    }

    /// The variables of node `i`: the workflow's, then each enclosing group's, then its own.
    fn chain_env(&self, i: usize) -> Vec<(String, String)> {
        let mut chain = vec![i];
        let mut g = i;
        while g != 0 {
            g = self.nodes[g].parent;
            chain.push(g);
        }
        let mut env = Vec::new();
        for &a in chain.iter().rev() {
            env.extend(self.nodes[a].env.iter().cloned());
        }
        env
    }

    /// Why node `i`, entered now, is skipped (Ok(None): it runs; Err: its condition could not
    /// be evaluated, which fails it).
    fn skip_reason(
        &mut self,
        i: usize,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<Option<String>, String> {
        if self.aborted {
            return Ok(Some("the workflow was aborted".to_string()));
        }
        if self.timed_out_scope(i, now, out).is_some() {
            return Ok(Some("an enclosing group timed out".to_string()));
        }
        let failed = self.scope_failed(i);
        Ok(match &self.nodes[i].condition {
            Condition::Always => None,
            Condition::Never => Some("condition: never".to_string()),
            Condition::Passed if failed => Some("condition: passed, and a step failed".to_string()),
            Condition::Failed if !failed => {
                Some("condition: failed, and no step failed".to_string())
            }
            Condition::Expr(e) => {
                let env = self.chain_env(i);
                let cx = Cx {
                    passed: !failed,
                    env: &env,
                    base: &self.base_env,
                };
                let v = e
                    .eval(&cx)
                    .map_err(|m| format!("its condition could not be evaluated: {m}"))?;
                (!v.truthy()).then(|| "condition: false".to_string())
            }
            _ => None,
        })
    }

    /// Walks the tree from the cursor until a leaf is spawned or this container is done.
    fn advance(&mut self, now: u64, out: &mut Vec<Action>) {
        loop {
            match self.cursor {
                Cursor::Finished => {
                    let status = self.workflow_status();
                    let ms = now.saturating_sub(self.st[0].started_ms);
                    self.commit(Entry::Done { status, ms }, out);
                    out.push(Action::Exit(self.exit_code(status)));
                    return;
                }
                Cursor::Leave(g) => {
                    if g == 0 || self.owner(g) > self.group {
                        // The workflow's end is `done`; a group with parts left for a later
                        // container (skipped ones, for it to report) ends there.
                        self.cursor = Cursor::Finished;
                        continue;
                    }
                    // An aborted step (a signal, a killed init) leaves its groups aborted: nobody
                    // knows what it would have done, so not even a negative group may pass.
                    let aborted = self.nodes[g]
                        .children
                        .iter()
                        .any(|&c| self.st[c].phase == Phase::Aborted && !self.nodes[c].optional);
                    let s = &self.st[g];
                    let (mut status, mut reason) = if s.timed_out {
                        (
                            Status::Timeout,
                            Some(format!(
                                "timed out after {}",
                                fmt_ms(self.nodes[g].timeout_ms.unwrap_or(0))
                            )),
                        )
                    } else if aborted {
                        (Status::Aborted, Some("a step was aborted".into()))
                    } else if s.failed {
                        (Status::Failed, None)
                    } else {
                        (Status::Passed, None)
                    };
                    if self.nodes[g].negative && matches!(status, Status::Passed | Status::Failed) {
                        status = if status == Status::Passed {
                            reason = Some("expected a failure, all steps passed".into());
                            Status::Failed
                        } else {
                            Status::Passed
                        };
                    }
                    let e = Entry::End {
                        node: g,
                        status,
                        code: None,
                        ms: now.saturating_sub(s.started_ms),
                        attempt: 1,
                        fin: true,
                        reason,
                    };
                    self.commit(e, out);
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
                        self.commit(
                            Entry::Skip {
                                node: i,
                                reason: "skipped".into(),
                            },
                            out,
                        );
                        self.cursor = self.after(i);
                        continue;
                    }
                    let container = n.leaf.as_ref().map(|l| l.container);
                    if phase == Phase::Retrying {
                        self.resume_retry(i, now, out);
                        if self.launching.is_some() {
                            return;
                        }
                        self.cursor = self.after(i);
                        continue;
                    }
                    let fail = match self.skip_reason(i, now, out) {
                        Ok(Some(reason)) => {
                            self.commit(Entry::Skip { node: i, reason }, out);
                            self.cursor = self.after(i);
                            continue;
                        }
                        Ok(None) => None,
                        Err(reason) => Some(reason),
                    };
                    if let (Some(reason), None) = (&fail, container) {
                        // A group whose condition fails to evaluate: started, its steps
                        // skipped, failed.
                        self.commit(
                            Entry::Start {
                                node: i,
                                attempt: 1,
                                at: now,
                            },
                            out,
                        );
                        for c in self.nodes[i].children.clone() {
                            let why = "its group's condition could not be evaluated".to_string();
                            self.commit(
                                Entry::Skip {
                                    node: c,
                                    reason: why,
                                },
                                out,
                            );
                        }
                        let e = Entry::End {
                            node: i,
                            status: Status::Failed,
                            code: None,
                            ms: 0,
                            attempt: 1,
                            fin: true,
                            reason: Some(reason.clone()),
                        };
                        self.commit(e, out);
                        self.cursor = self.after(i);
                        continue;
                    }
                    let first_child = self.nodes[i].children.first().copied();
                    match container {
                        Some(c) if c < self.group && self.stateless => {
                            let reason =
                                format!("container {c} ran before (without --state, nothing is known of it)");
                            self.commit(Entry::Skip { node: i, reason }, out);
                            self.cursor = self.after(i);
                        }
                        Some(c) if c < self.group => {
                            // Its container ended without starting it (its init was killed
                            // between steps, or its journal is gone): it cannot run here.
                            let reason = format!(
                                "container {c} ended before this step started (its init was killed, or its state lost)"
                            );
                            let e = Entry::End {
                                node: i,
                                status: Status::Aborted,
                                code: None,
                                ms: 0,
                                attempt: 1,
                                fin: true,
                                reason: Some(reason),
                            };
                            self.commit(e, out);
                            self.cursor = self.after(i);
                        }
                        Some(_) => {
                            self.launch(i, 1, fail, now, out);
                            return;
                        }
                        None => {
                            // A group: start it, with its deadline bounding all its children.
                            let next = match first_child {
                                Some(c) => Cursor::Enter(c),
                                None => Cursor::Leave(i),
                            };
                            let e = Entry::Start {
                                node: i,
                                attempt: 1,
                                at: now,
                            };
                            self.commit(e, out);
                            self.cursor = next;
                        }
                    }
                }
            }
        }
    }

    /// A leaf found `retrying` (its init ended after an attempt, before the next began): the next
    /// attempt runs if this is its container and the retry still may, the last result stands
    /// otherwise.
    fn resume_retry(&mut self, i: usize, now: u64, out: &mut Vec<Action>) {
        let container = self.nodes[i].leaf.as_ref().map_or(0, |l| l.container);
        let own = container == self.group;
        let next = self.st[i].attempt + 1;
        let last_failed = self.st[i]
            .last
            .is_some_and(|s| Status::from(s).is_failure());
        let never_began = |reason: String| Entry::End {
            node: i,
            status: Status::Aborted,
            code: None,
            ms: 0,
            attempt: next,
            fin: true,
            reason: Some(reason),
        };
        if own && self.aborted {
            self.commit(
                never_began(format!("aborted before attempt {next} started")),
                out,
            );
        } else if own && self.timed_out_scope(i, now, out).is_none() {
            self.launch(i, next, None, now, out);
        } else if last_failed || own {
            // No more attempts may run (its group timed out), or its container ended after a
            // failed attempt: that failure is the step's result.
            self.commit(Entry::Settle { node: i }, out);
        } else {
            // Its container ended after a passed attempt that more were to follow (`until:
            // failed`): the attempts it owed never ran, which is no pass.
            let why = format!("container {container} ended before attempt {next} began");
            self.commit(never_began(why), out);
        }
    }
}

/// Builds the node tree from the spec's steps.
struct Builder<'a> {
    nodes: &'a mut Vec<Node>,
    shell: &'a str,
    last_container: &'a mut u32,
}

impl Builder<'_> {
    fn add_children(
        &mut self,
        parent: usize,
        steps: &[stepinit_protocol::Step],
        path: &str,
        id_prefix: &str,
    ) -> Result<(), BuildError> {
        let mut prev: Option<usize> = None;
        for (k, s) in steps.iter().enumerate() {
            let path = format!("{path}[{k}]");
            let id =
                s.id.clone()
                    .unwrap_or_else(|| format!("{id_prefix}{}", k + 1));
            let idx = self.nodes.len();
            let leaf = if s.steps.is_empty() {
                let container = s.container.unwrap_or(0);
                if container < *self.last_container {
                    return Err(BuildError {
                        path: format!("{path}.container"),
                        message: format!(
                            "container {container} after a step of container {}: containers run in order",
                            *self.last_container
                        ),
                    });
                }
                *self.last_container = container;
                let argv = match &s.shell {
                    Some(script) => vec![
                        self.shell.to_string(),
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
                    computed: s.computed.clone(),
                })
            } else {
                None
            };
            let (first, last) = leaf
                .as_ref()
                .map_or((u32::MAX, 0), |l| (l.container, l.container));
            self.nodes.push(Node {
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
                condition: s.condition.clone(),
                negative: s.negative,
                optional: s.optional,
                timeout_ms: s.timeout_ms,
                grace_ms: s.grace_ms.unwrap_or(DEFAULT_GRACE_MS),
                retry: s.retry.as_ref().map(|r| (r.count, r.until.clone())),
                first_container: first,
                last_container: last,
            });
            if let Some(p) = prev {
                self.nodes[p].next_sibling = Some(idx);
            }
            self.nodes[parent].children.push(idx);
            prev = Some(idx);
            if !s.steps.is_empty() {
                // Group working directories are not inherited: only leaves run somewhere.
                self.add_children(idx, &s.steps, &format!("{path}.steps"), &format!("{id}."))?;
            }
            // Propagate the container span upwards.
            let (f, l) = (
                self.nodes[idx].first_container,
                self.nodes[idx].last_container,
            );
            let p = &mut self.nodes[parent];
            p.first_container = p.first_container.min(f);
            p.last_container = p.last_container.max(l);
        }
        Ok(())
    }
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
    use crate::journal;
    use std::collections::{BTreeMap, HashMap, VecDeque};

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
        /// SIGTERM arrives just before it would be spawned.
        AbortAtSpawn,
        /// The init is SIGKILLed while the step runs: the run ends with what was journaled and
        /// printed so far (exit code -1 in [`Run`]).
        Crash,
    }

    /// One container's journal as the tests keep it: the snapshot it starts from (JSON) and its
    /// entries in the journal's text form, as on disk.
    #[derive(Clone, Default)]
    struct File {
        snapshot: Option<String>,
        lines: Vec<Vec<u8>>,
    }

    /// The state directory: each container's journal.
    #[derive(Clone, Default)]
    struct Disk(BTreeMap<u32, File>);

    impl Disk {
        fn replay(m: &mut Machine, g: u32, f: &File) -> Vec<Record> {
            if let Some(js) = &f.snapshot {
                m.restore(serde_json::from_str(js).unwrap()).unwrap();
            }
            let mut last = Vec::new();
            for l in &f.lines {
                last = m.replay(g, &journal::decode(l).unwrap()).unwrap();
            }
            last
        }

        /// What `journal::open` does: this container's own journal when it has one (a
        /// restart), else the newest predecessor's; returns the machine and the records to print
        /// again.
        fn open(&mut self, s: &Spec, group: u32) -> (Machine, Vec<Record>) {
            let mut m = Machine::new(s, group, "/bin/sh").unwrap();
            if let Some(f) = self.0.get(&group).cloned() {
                let again = Disk::replay(&mut m, group, &f);
                m.restarted();
                return (m, again);
            }
            let mut again = Vec::new();
            let mut replayed = false;
            for g in (0..group).rev() {
                if let Some(f) = self.0.get(&g).cloned() {
                    again = Disk::replay(&mut m, g, &f);
                    again.retain(|r| !matches!(r, Record::Done { .. }));
                    replayed = true;
                    break;
                }
            }
            let snapshot = replayed.then(|| serde_json::to_string(&m.state()).unwrap());
            self.0.insert(
                group,
                File {
                    snapshot,
                    lines: Vec::new(),
                },
            );
            (m, again)
        }

        fn append(&mut self, group: u32, e: &Entry) {
            let mut b = Vec::new();
            journal::encode(e, &mut b);
            self.0.entry(group).or_default().lines.push(b);
        }
    }

    struct Run {
        /// Records printed, as [`fmt`] writes them.
        log: Vec<String>,
        records: Vec<Record>,
        launches: Vec<Launch>,
        code: i32,
        state: State,
        reported: Vec<String>,
        /// Actions carried out (journal appends and prints among them).
        actions: usize,
        /// For each record printed: the actions carried out once it was.
        emitted_at: Vec<usize>,
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

    /// Drives container `group` like the driver does, with the state in `disk`; `outcome`
    /// picks each attempt's behaviour; `crash_after`: the init dies after that many actions.
    fn run_on(
        s: &Spec,
        group: u32,
        disk: &mut Disk,
        crash_after: Option<usize>,
        mut outcome: impl FnMut(&Launch) -> Out,
    ) -> Run {
        let (mut m, again) = disk.open(s, group);
        let mut now = 1000;
        let mut r = Run {
            log: Vec::new(),
            records: Vec::new(),
            launches: Vec::new(),
            code: -1,
            state: m.state(),
            reported: Vec::new(),
            actions: 0,
            emitted_at: Vec::new(),
        };
        let finish = |m: &Machine, mut r: Run, code: i32| {
            // One init prints one `done` at most (besides the one of its journal's seal it
            // may print again): never two.
            let printed_again = r.emitted_at.iter().take_while(|&&a| a == 0).count();
            let dones = r.records[printed_again..]
                .iter()
                .filter(|x| matches!(x, Record::Done { .. }))
                .count();
            assert!(dones <= 1, "{dones} done records: {:?}", r.log);
            r.code = code;
            r.state = m.state();
            r.reported = m
                .reported()
                .map(|(id, st, _)| format!("{id}={st}"))
                .collect();
            r
        };
        for rec in again {
            r.log.push(fmt(&rec));
            r.records.push(rec);
            r.emitted_at.push(0);
        }
        let mut queue: VecDeque<Action> = m.start(now, None).into();
        let mut running: Option<(Out, Option<u64>)> = None;
        let mut stopping = false;
        loop {
            while let Some(a) = queue.pop_front() {
                if crash_after == Some(r.actions) {
                    return finish(&m, r, -1);
                }
                r.actions += 1;
                match a {
                    Action::Journal(e) => disk.append(group, &e),
                    Action::Emit(rec) => {
                        r.log.push(fmt(&rec));
                        r.records.push(rec);
                        r.emitted_at.push(r.actions);
                    }
                    Action::Stop => stopping = true,
                    Action::Exit(code) => return finish(&m, r, code),
                    Action::Spawn(l) => {
                        r.launches.push(l.clone());
                        let o = outcome(&l);
                        let ev = match o {
                            Out::NoProgram => Event::SpawnFailed {
                                code: Some(127),
                                reason: "program not found: x".into(),
                            },
                            Out::AbortAtSpawn => Event::Abort,
                            _ => {
                                running = Some((o, l.deadline));
                                Event::Spawned
                            }
                        };
                        queue.extend(m.handle(ev, now));
                    }
                }
            }
            if stopping {
                stopping = false;
                now += 5;
                queue.extend(m.handle(Event::Exited { code: 143 }, now));
                continue;
            }
            let (o, deadline) = running
                .take()
                .expect("the machine neither spawned nor exited");
            now += 10;
            let ev = match o {
                Out::Exit(code) => Event::Exited { code },
                Out::Hang => {
                    now = deadline.expect("a hanging step needs a deadline");
                    Event::Deadline
                }
                Out::Abort => Event::Abort,
                Out::Crash => return finish(&m, r, -1),
                Out::NoProgram | Out::AbortAtSpawn => unreachable!(),
            };
            queue.extend(m.handle(ev, now));
        }
    }

    /// One container with a fresh state.
    fn drive(s: &Spec, group: u32, outcome: impl FnMut(&Launch) -> Out) -> Run {
        run_on(s, group, &mut Disk::default(), None, outcome)
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
            let r = drive(&spec(json), 0, by_name);
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
        let r = drive(&s, 0, |_| Out::Exit(codes.next().unwrap()));
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
        let r = drive(&s, 0, |_| Out::Exit(codes.next().unwrap()));
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
        let mut m = Machine::new(&s, 0, "/bin/sh").unwrap();
        let a = m.start(100, None);
        let Some(Action::Spawn(l)) = a.last() else {
            panic!("{a:?}")
        };
        assert_eq!((l.deadline, l.grace_ms), (Some(1600), 7));
        let a = m.handle(Event::Spawned, 100);
        assert!(
            matches!(
                a[..],
                [
                    Action::Journal(Entry::Start { .. }),
                    Action::Emit(Record::Start { .. })
                ]
            ),
            "{a:?}"
        );
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
        let r = drive(&s, 0, by_name);
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
        let r = drive(&s, 0, by_name);
        assert_eq!(
            r.log.join(" "),
            "S:1#1 E:1=passed/0#1 S:2#1 S:2.1#1 E:2.1=aborted/143#1 E:2.2=skipped#0 \
             E:2=aborted#1 E:3=skipped#0 D=aborted!"
        );
        assert_eq!(r.code, EXIT_ABORTED);
        assert!(r.state.aborted);
    }

    /// A signal between two steps: the next one never begins, so it has no start record; the
    /// same for a retry's next attempt.
    #[test]
    fn an_abort_before_a_spawn_starts_nothing() {
        let s = spec(
            r#"{"version":1,"steps":[{"command":["ok"]},{"command":["x"],"retry":{"count":3}},
            {"command":["ok"],"condition":"always"}]}"#,
        );
        let mut spawns = 0;
        let r = drive(&s, 0, |l| {
            spawns += 1;
            match (l.step.as_str(), l.attempt) {
                ("2", 1) => Out::Exit(1),
                ("2", 2) => Out::AbortAtSpawn,
                _ => by_name(l),
            }
        });
        assert_eq!(
            r.log.join(" "),
            "S:1#1 E:1=passed/0#1 S:2#1 E:2=failed/1#1 E:2=aborted#2 E:3=skipped#0 D=aborted!"
        );
        let reason = r.records.iter().find_map(|x| match x {
            Record::End {
                attempt: 2, reason, ..
            } => reason.clone(),
            _ => None,
        });
        assert_eq!(reason.as_deref(), Some("aborted before attempt 2 started"));
        assert_eq!(spawns, 3);
    }

    /// Write-ahead: every record is journaled before it is printed, and a leaf's start only once
    /// it is spawned.
    #[test]
    fn a_record_is_journaled_before_it_is_printed() {
        let s = spec(r#"{"version":1,"steps":[{"command":["x"]},{"command":["y"]}]}"#);
        let mut m = Machine::new(&s, 0, "/bin/sh").unwrap();
        let a = m.start(0, None);
        assert!(
            matches!(
                a[..],
                [
                    Action::Journal(Entry::Start { node: 0, .. }),
                    Action::Spawn(_)
                ]
            ),
            "{a:?}"
        );
        let a = m.handle(Event::Spawned, 1);
        assert!(
            matches!(
                a[..],
                [
                    Action::Journal(Entry::Start { node: 1, .. }),
                    Action::Emit(Record::Start { .. })
                ]
            ),
            "{a:?}"
        );
        let a = m.handle(Event::Exited { code: 0 }, 5);
        assert!(
            matches!(
                a[..],
                [
                    Action::Journal(Entry::End { node: 1, .. }),
                    Action::Emit(Record::End { .. }),
                    Action::Spawn(_)
                ]
            ),
            "{a:?}"
        );
    }

    #[test]
    fn abort_is_journaled_at_once_and_stops_only_once() {
        let s = spec(r#"{"version":1,"steps":[{"command":["x"]}]}"#);
        let mut m = Machine::new(&s, 0, "/bin/sh").unwrap();
        m.start(0, None);
        m.handle(Event::Spawned, 1);
        assert_eq!(
            m.handle(Event::Abort, 5),
            [Action::Journal(Entry::Abort), Action::Stop]
        );
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
        let r = drive(&s, 0, |_| Out::Exit(0));
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
        let r = drive(&s2, 0, |_| Out::Exit(0));
        assert_eq!(r.launches[0].argv[0], "/busybox/sh");
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
        let mut disk = Disk::default();
        let r0 = run_on(&s, 0, &mut disk, None, by_name);
        assert_eq!(
            r0.log.join(" "),
            "S:1#1 E:1=failed/1#1 S:g#1 S:g.1#1 E:g.1=passed/0#1 D=failed"
        );
        assert_eq!(r0.code, 0, "intermediate containers exit 0");
        let r1 = run_on(&s, 1, &mut disk, None, by_name);
        assert_eq!(
            r1.log.join(" "),
            "E:g.2=skipped#0 S:g.3#1 E:g.3=passed/0#1 D=failed"
        );
        assert_eq!(r1.code, 0);
        let r2 = run_on(&s, 2, &mut disk, None, by_name);
        assert_eq!(
            r2.log.join(" "),
            "S:g.4#1 E:g.4=passed/0#1 E:g=passed#1 S:3#1 E:3=passed/0#1 D=failed!"
        );
        assert_eq!(r2.code, EXIT_FAILED);
        assert_eq!(r2.reported, ["g.4=passed", "g=passed", "3=passed"]);
        // Each journal begins with the state its container started from.
        assert!(disk.0[&0].snapshot.is_none());
        assert!(disk.0[&1].snapshot.is_some() && disk.0[&2].snapshot.is_some());
    }

    #[test]
    fn a_killed_init_leaves_an_aborted_step_for_the_next_one() {
        let s = spec(THREE);
        let mut disk = Disk::default();
        let r0 = run_on(&s, 0, &mut disk, None, |_| Out::Crash);
        assert_eq!(r0.log.join(" "), "S:1#1");
        assert_eq!(r0.state.nodes[1].phase, Phase::Running);
        let r1 = run_on(&s, 1, &mut disk, None, by_name);
        // Step 1's start is printed again (its writer may not have), then its end.
        assert_eq!(
            r1.log.join(" "),
            "S:1#1 E:1=aborted#1 S:g#1 E:g.1=aborted#1 E:g.2=skipped#0 S:g.3#1 \
             E:g.3=passed/0#1 D=failed"
        );
        let reasons: Vec<_> = r1
            .records
            .iter()
            .filter_map(|x| match x {
                Record::End { reason, .. } => reason.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons[0],
            "the init of container 0 was killed before it recorded this step's end"
        );
        assert!(
            reasons[1].starts_with("container 0 ended before this step started"),
            "{reasons:?}"
        );
    }

    /// A restarted container continues its own journal: the killed step is aborted, an attempt
    /// that never began runs now; and the workflow fails (a step could have cut the journal
    /// and killed its init, to run again what had failed), so `passed` steps skip.
    #[test]
    fn a_restarted_container_continues_its_own_journal() {
        let s = spec(
            r#"{"version":1,"steps":[{"command":["ok"]},{"command":["x"],"retry":{"count":2}},{"command":["ok"]}]}"#,
        );
        let mut disk = Disk::default();
        let mut attempts = 0;
        // Killed after attempt 1 of step 2 ended (journaled and printed), before attempt 2.
        let r = run_on(&s, 0, &mut disk, None, |l| match l.step.as_str() {
            "2" => {
                attempts += 1;
                if attempts == 1 {
                    Out::Exit(1)
                } else {
                    Out::Crash
                }
            }
            _ => by_name(l),
        });
        assert_eq!(r.code, -1);
        // The crash came while attempt 2 ran: the restart reports it aborted.
        let ok = |_: &Launch| Out::Exit(0);
        let r = run_on(&s, 0, &mut disk, None, ok);
        assert_eq!(
            r.log.join(" "),
            "S:2#2 E:2=aborted#2 E:3=skipped#0 D=failed!"
        );
        // Killed between attempt 1's end and attempt 2's spawn: attempt 2 runs at restart.
        let mut disk = Disk::default();
        let base = run_on(&s, 0, &mut Disk::default(), None, |l| {
            match l.step.as_str() {
                "2" => Out::Exit(1),
                _ => by_name(l),
            }
        });
        let end1 = base.log.iter().position(|x| x == "E:2=failed/1#1").unwrap();
        // Killed right after that record was printed.
        let upto = base.emitted_at[end1];
        let r = run_on(&s, 0, &mut disk, Some(upto), |l| match l.step.as_str() {
            "2" => Out::Exit(1),
            _ => by_name(l),
        });
        assert_eq!(
            r.log.last().map(String::as_str),
            Some("E:2=failed/1#1"),
            "{:?}",
            r.log
        );
        let r = run_on(&s, 0, &mut disk, None, ok);
        assert_eq!(
            r.log.join(" "),
            // Attempt 2 was owed: it runs; but a restart fails the workflow, so step 3 skips.
            "E:2=failed/1#1 S:2#2 E:2=passed/0#2 E:3=skipped#0 D=failed!"
        );
    }

    /// A retried leaf whose container ended between two attempts: after a failed one, that
    /// failure stands; after a passed one (`until: failed`, the attempts it owed never ran), it
    /// is aborted, never a pass.
    #[test]
    fn owed_attempts_that_never_ran_are_no_pass() {
        for (until, first, want) in [
            ("passed", 1, "E:1=failed/1#1"),
            ("failed", 0, "E:1=aborted#2"),
        ] {
            let s = spec(&format!(
                r#"{{"version":1,"containers":[{{}},{{}}],"steps":[
                {{"command":["x"],"container":0,"retry":{{"count":3,"until":"{until}"}}}},
                {{"command":["ok"],"container":1,"condition":"always"}}]}}"#
            ));
            let outcome = |l: &Launch| match l.argv[0].as_str() {
                "x" => Out::Exit(first),
                _ => by_name(l),
            };
            let base = run_on(&s, 0, &mut Disk::default(), None, outcome);
            let end1 = base.log.iter().position(|x| x.starts_with("E:1=")).unwrap();
            let mut disk = Disk::default();
            run_on(&s, 0, &mut disk, Some(base.emitted_at[end1]), outcome);
            let r1 = run_on(&s, 1, &mut disk, None, outcome);
            assert_eq!(
                r1.log.last().map(String::as_str),
                Some("D=failed!"),
                "until {until}: {:?}",
                r1.log
            );
            let (steps, _) =
                read(&[base.records[..=end1].to_vec(), r1.records.clone()].concat()).unwrap();
            assert_ne!(steps["1"], Status::Passed, "until {until}");
            assert!(
                r1.log.iter().any(|x| x == want) || base.log[end1] == want,
                "until {until}: {:?}",
                r1.log
            );
        }
    }

    /// The reason of the first end record container `group` prints when it starts from `disk`.
    fn first_reason(s: &Spec, group: u32, disk: &Disk) -> Option<String> {
        let mut disk = disk.clone();
        run_on(s, group, &mut disk, None, by_name)
            .records
            .into_iter()
            .find_map(|a| match a {
                Record::End { reason, .. } => reason,
                _ => None,
            })
    }

    #[test]
    fn an_abort_is_honoured_by_later_containers() {
        let s = spec(THREE);
        let mut disk = Disk::default();
        let r0 = run_on(&s, 0, &mut disk, None, |_| Out::Abort);
        // The group is skipped by container 0; each container reports its own part of it.
        assert_eq!(
            r0.log.join(" "),
            "S:1#1 E:1=aborted/143#1 E:g.1=skipped#0 D=aborted"
        );
        assert_eq!(r0.code, 0);
        let r1 = run_on(&s, 1, &mut disk, None, |_| {
            panic!("nothing runs after an abort")
        });
        assert_eq!(
            r1.log.join(" "),
            "E:g.2=skipped#0 E:g.3=skipped#0 D=aborted"
        );
        let r2 = run_on(&s, 2, &mut disk, None, |_| {
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
        let mut disk = Disk::default();
        let r0 = run_on(&s, 0, &mut disk, None, by_name);
        assert_eq!(
            r0.log.join(" "),
            "S:1#1 E:1=failed/1#1 E:g.1=skipped#0 D=failed"
        );
        let r1 = run_on(&s, 1, &mut disk, None, by_name);
        assert_eq!(r1.log.join(" "), "E:g.2=skipped#0 D=failed");
        assert_eq!(
            first_reason(&s, 2, &disk).as_deref(),
            Some("condition: passed, and a step failed")
        );
        let r2 = run_on(&s, 2, &mut disk, None, by_name);
        assert_eq!(
            r2.log.join(" "),
            "E:g.3=skipped#0 E:g=skipped#0 S:3#1 E:3=passed/0#1 D=failed!"
        );
    }

    #[test]
    fn a_sealed_journal_runs_nothing_twice() {
        let s = spec(r#"{"version":1,"steps":[{"command":["fail"]}]}"#);
        let mut disk = Disk::default();
        let r = run_on(&s, 0, &mut disk, None, by_name);
        assert_eq!(r.code, EXIT_FAILED);
        let again = run_on(&s, 0, &mut disk, None, |_| panic!("ran twice"));
        // Its `done` printed again (its last entry), the same result, nothing run.
        assert_eq!(again.log.join(" "), "D=failed!");
        assert_eq!(again.code, EXIT_FAILED);
    }

    #[test]
    fn a_taint_fails_the_workflow_and_says_why() {
        let s = spec(
            r#"{"version":1,"steps":[{"command":["ok"]},{"command":["ok"],"condition":"always"}]}"#,
        );
        let mut m = Machine::new(&s, 0, "/bin/sh").unwrap();
        let a = m.start(0, Some("state/journal.0: line 3 fails verification".into()));
        assert_eq!(
            a[0],
            Action::Journal(Entry::Taint {
                reason: "state/journal.0: line 3 fails verification".into()
            })
        );
        // The workflow has failed: a `passed` step skips, an `always` one runs.
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Emit(Record::End {
                status: Status::Skipped,
                ..
            })
        )));
        assert!(
            matches!(a.last(), Some(Action::Spawn(l)) if l.step == "2"),
            "{a:?}"
        );
        m.handle(Event::Spawned, 1);
        let a = m.handle(Event::Exited { code: 0 }, 2);
        let done = a.iter().find_map(|x| match x {
            Action::Emit(Record::Done { status, reason, .. }) => Some((*status, reason.clone())),
            _ => None,
        });
        assert_eq!(
            done,
            Some((
                Status::Failed,
                Some("state/journal.0: line 3 fails verification".into())
            ))
        );
        assert_eq!(a.last(), Some(&Action::Exit(EXIT_FAILED)));
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
        let st = Machine::new(&s, 0, "/bin/sh").unwrap().state();
        let mut m1 = Machine::new(&s, 1, "/shared/sh").unwrap();
        assert_eq!(m1.restore(st), Ok(()));
    }

    #[test]
    fn state_of_another_spec_is_refused() {
        let s = spec(THREE);
        let st = Machine::new(&s, 0, "/bin/sh").unwrap().state();
        let other = spec(r#"{"version":1,"steps":[{"command":["ok"]}]}"#);
        let mut m = Machine::new(&other, 0, "sh").unwrap();
        assert_eq!(
            m.restore(st).unwrap_err(),
            "the state was written for another spec"
        );
    }

    #[test]
    fn replay_refuses_entries_an_init_cannot_have_written() {
        let s = spec(THREE);
        let mut m = Machine::new(&s, 1, "sh").unwrap();
        assert!(m.replay(0, &Entry::Settle { node: 99 }).is_err());
        assert!(
            m.replay(0, &Entry::TimedOut { node: 1 }).is_err(),
            "a leaf has no deadline"
        );
        assert!(
            m.replay(0, &Entry::Settle { node: 1 }).is_err(),
            "not retrying"
        );
        assert!(
            m.replay(2, &Entry::Abort).is_err(),
            "a later container's entry"
        );
        let end = Entry::End {
            node: 1,
            status: Status::Passed,
            code: Some(0),
            ms: 1,
            attempt: 1,
            fin: true,
            reason: None,
        };
        assert!(m.replay(0, &end).is_ok());
        assert!(m.replay(0, &end).is_err(), "a step ends once");
    }

    #[test]
    fn containers_must_be_in_order_and_exist() {
        let s = spec(
            r#"{"version":1,"containers":[{},{}],"steps":[{"command":["a"],"container":1},{"steps":[{"command":["b"],"container":0}]}]}"#,
        );
        let e = Machine::new(&s, 0, "sh").unwrap_err();
        assert_eq!(e.path, "steps[1].steps[0].container");
        let s = spec(r#"{"version":1,"steps":[{"command":["a"]}]}"#);
        assert_eq!(Machine::new(&s, 1, "sh").unwrap_err().path, "--group");
    }

    /// What a reader makes of the records of every init of a workflow, in the order printed:
    /// repeats of a start or end (printed again by an init that continued a journal) dropped.
    /// Err when the records contradict themselves: two different ends of one attempt, a start
    /// after its end, an end of an attempt that began without a start, an attempt left open.
    /// Ok: each step's final status, and the workflow's (the `done` with `last`).
    fn read(records: &[Record]) -> Result<(BTreeMap<String, Status>, Option<Status>), String> {
        let mut seen = stepinit_protocol::attempts::Attempts::default();
        let mut last: BTreeMap<String, Status> = BTreeMap::new();
        let mut done = None;
        for r in records {
            if !seen.admit(r).map_err(|c| c.0)? {
                continue;
            }
            match r {
                Record::End {
                    step,
                    status,
                    attempt,
                    reason,
                    ..
                } => {
                    let never_began = *status == Status::Aborted
                        && reason
                            .as_deref()
                            .is_some_and(|x| x.contains("before") && x.contains("start"));
                    if never_began && seen.started(step) >= *attempt as usize {
                        return Err(format!("{step}#{attempt} began, yet ends as never begun"));
                    }
                    last.insert(step.clone(), *status);
                }
                Record::Done {
                    status, last: true, ..
                } => done = Some(*status),
                _ => {}
            }
        }
        if let Some((s, a)) = seen.open().first() {
            return Err(format!("{s}#{a} never ends"));
        }
        Ok((last, done))
    }

    /// Every step of the spec, by id.
    fn step_ids(s: &Spec) -> Vec<String> {
        let m = Machine::new(s, 0, "sh").unwrap();
        m.nodes[1..].iter().map(|n| n.id.clone()).collect()
    }

    /// Runs every container in order; the init of container `crash.0` dies after `crash.1`
    /// actions, and then `restart`: it runs again (a restarted container) or the next container
    /// goes on. Returns all records printed, and the last container's exit code.
    fn run_all(
        s: &Spec,
        outcome: &mut dyn FnMut(&Launch) -> Out,
        crash: Option<(u32, usize)>,
        restart: bool,
    ) -> (Vec<Record>, i32, Vec<usize>) {
        let mut disk = Disk::default();
        let mut records = Vec::new();
        let mut code = -1;
        let mut counts = Vec::new();
        for g in 0..s.container_count() as u32 {
            let at = crash.and_then(|(c, k)| (c == g).then_some(k));
            let r = run_on(s, g, &mut disk, at, &mut *outcome);
            counts.push(r.actions);
            records.extend(r.records);
            code = r.code;
            if r.code == -1 && restart {
                let r = run_on(s, g, &mut disk, None, &mut *outcome);
                records.extend(r.records);
                code = r.code;
            }
        }
        (records, code, counts)
    }

    /// The init is killed at every boundary between two of its actions (a journal append, a
    /// print, a spawn), in every container, and the container restarts or the next one goes on:
    /// each step is reported with one consistent result, attempts that never began have no
    /// start, and a workflow that did not pass never passes because of a kill.
    fn kill_everywhere(s: &Spec, outcome: &dyn Fn(&Launch) -> Out) -> usize {
        let ids = step_ids(s);
        let (base, base_code, counts) = run_all(s, &mut |l| outcome(l), None, false);
        let (base_steps, base_done) = read(&base).expect("the baseline reads cleanly");
        assert_eq!(base_steps.keys().count(), ids.len());
        let mut runs = 0;
        for (g, &n) in counts.iter().enumerate() {
            for k in 0..=n {
                for restart in [false, true] {
                    if !restart && g + 1 == counts.len() {
                        // Nobody would report what the last container's init did not.
                        continue;
                    }
                    let what =
                        format!("killed in container {g} after {k} actions, restart {restart}");
                    let (recs, code, _) =
                        run_all(s, &mut |l| outcome(l), Some((g as u32, k)), restart);
                    runs += 1;
                    let (steps, done) = read(&recs).unwrap_or_else(|e| {
                        panic!(
                            "{what}: {e}\n{}",
                            recs.iter().map(fmt).collect::<Vec<_>>().join(" ")
                        )
                    });
                    for id in &ids {
                        assert!(steps.contains_key(id), "{what}: step {id} never reported");
                    }
                    let done = done.unwrap_or_else(|| panic!("{what}: no final done"));
                    if done == Status::Passed {
                        assert_eq!(
                            base_done,
                            Some(Status::Passed),
                            "{what}: passed after a kill"
                        );
                        assert!(!steps.values().any(|s| s.is_failure()), "{what}");
                    }
                    if k == n {
                        // Killed after its last action: nothing was lost.
                        assert_eq!(
                            (steps.clone(), code),
                            (base_steps.clone(), base_code),
                            "{what}"
                        );
                    }
                }
            }
        }
        runs
    }

    #[test]
    fn every_kill_point_reports_each_step_once() {
        let cases = [
            r#"{"version":1,"steps":[{"command":["ok"]},{"command":["fail"]},{"command":["ok"],"condition":"always"}]}"#,
            r#"{"version":1,"steps":[{"command":["x"],"retry":{"count":2}},{"command":["ok"]}]}"#,
            r#"{"version":1,"steps":[{"id":"g","timeoutMs":30,"steps":[{"command":["ok"]},{"command":["hang"],"retry":{"count":3},"timeoutMs":10}]},{"command":["missing"],"condition":"always"}]}"#,
            THREE,
            r#"{"version":1,"containers":[{},{}],"steps":[{"command":["x"],"container":0,"retry":{"count":1}},{"command":["ok"],"container":1}]}"#,
        ];
        let mut runs = 0;
        for json in cases {
            let s = spec(json);
            // `x` fails its first attempt and passes the next.
            let tries = std::cell::RefCell::new(HashMap::<String, u32>::new());
            runs += kill_everywhere(&s, &|l| match l.argv[0].as_str() {
                "x" => {
                    let mut t = tries.borrow_mut();
                    let n = t.entry(l.step.clone()).or_default();
                    *n += 1;
                    if l.attempt == 1 {
                        Out::Exit(1)
                    } else {
                        Out::Exit(0)
                    }
                }
                _ => by_name(l),
            });
        }
        assert!(runs > 150, "{runs}");
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

    /// Random trees over three containers, random outcomes, an abort now and then, an init
    /// killed at a random action now and then (its container restarted, or not), the state going
    /// through the journal's text between containers: the records read cleanly (one result per
    /// step, no attempt begun twice or ended two ways), every step is reported, by the
    /// container that owns it when nothing was killed; the last container's exit code matches
    /// its `done`; a kill never makes a workflow pass.
    #[test]
    fn random_workflows_report_every_step_once() {
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
            // SIGTERM while a given step's first attempt runs (by the step, not by the count of
            // spawns, so that a run with a kill and one without abort at the same point).
            let ids = step_ids(&s);
            let abort_at = if rng.next(4) == 0 {
                Some(ids[rng.next(ids.len() as u64) as usize].clone())
            } else {
                None
            };
            let crash_pick = (
                rng.next(3) == 0,
                rng.next(3) as usize,
                rng.next(1 << 20) as usize,
            );
            let restart = rng.next(2) == 0;
            let outcome = || {
                let abort_at = abort_at.clone();
                move |l: &Launch| {
                    if abort_at.as_deref() == Some(l.step.as_str()) && l.attempt == 1 {
                        return Out::Abort;
                    }
                    by_name(l)
                }
            };
            let (base, _, counts) = run_all(&s, &mut outcome(), None, false);
            let base_done = read(&base).unwrap().1;
            // A kill at a random action of a random container (one that does something).
            let crash = crash_pick.0.then(|| {
                (
                    crash_pick.1 as u32,
                    crash_pick.2 % counts[crash_pick.1].max(1),
                )
            });
            let (recs, code, _) = run_all(&s, &mut outcome(), crash, restart);
            let what = format!("seed {seed} crash {crash:?} restart {restart}\n{json}");
            if code == -1 {
                // The last container's init was killed for good: nobody reports the rest.
                crashes += 1;
                continue;
            }
            let (steps, done) = read(&recs).unwrap_or_else(|e| panic!("{what}: {e}"));
            for id in step_ids(&s) {
                assert!(steps.contains_key(&id), "{what}: step {id} never reported");
            }
            crashes += usize::from(crash.is_some());
            aborts += usize::from(done == Some(Status::Aborted));
            runs += 1;
            let want = match done {
                Some(Status::Passed) => 0,
                Some(Status::Failed) => EXIT_FAILED,
                Some(Status::Aborted) => EXIT_ABORTED,
                other => panic!("{what}: final {other:?}"),
            };
            assert_eq!(code, want, "{what}");
            if done == Some(Status::Passed) && abort_at.is_none() {
                // (A signal the kill pre-empted may have been what failed the other run.)
                assert_eq!(
                    base_done,
                    Some(Status::Passed),
                    "{what}: passed after a kill"
                );
            }
        }
        // The test exercises what it claims to.
        assert!(
            runs > 900 && crashes > 100 && aborts > 100,
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
