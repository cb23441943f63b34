//! The rule every reader of records follows when several inits report one workflow: an init
//! that continues another's journal prints the records of its last entry again (their writer may
//! have died before printing them), so the same start or end of an attempt can come twice.
//! [`Attempts::admit`] keeps the first, drops exact repeats and refuses what contradicts it.

use crate::{Record, Status};
use std::collections::{HashMap, HashSet};

/// What a reader has seen of each attempt of each step.
#[derive(Debug, Default, Clone)]
pub struct Attempts {
    started: HashSet<(String, u32)>,
    ended: HashMap<(String, u32), Record>,
}

/// A record that contradicts an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction(pub String);

impl Attempts {
    /// Ok(true): a new record, to use; Ok(false): a repeat of one already seen, to drop.
    /// `done` records are always new (each init prints its own).
    pub fn admit(&mut self, r: &Record) -> Result<bool, Contradiction> {
        match r {
            Record::Start { step, attempt, .. } => {
                let k = (step.clone(), *attempt);
                if self.started.contains(&k) {
                    return Ok(false);
                }
                if self.ended.contains_key(&k) {
                    return Err(Contradiction(format!(
                        "step {step} attempt {attempt} starts after its end"
                    )));
                }
                // Attempts follow each other: the one before has ended.
                if *attempt > 1 && !self.ended.contains_key(&(step.clone(), attempt - 1)) {
                    return Err(Contradiction(format!(
                        "step {step} attempt {attempt} starts before attempt {} ended",
                        attempt - 1
                    )));
                }
                if self.ended.contains_key(&(step.clone(), 0)) {
                    return Err(Contradiction(format!(
                        "step {step} starts after it was reported skipped"
                    )));
                }
                self.started.insert(k);
                Ok(true)
            }
            Record::End {
                step,
                attempt,
                status,
                ..
            } => {
                let k = (step.clone(), *attempt);
                match self.ended.get(&k) {
                    Some(prev) if prev == r => return Ok(false),
                    Some(_) => {
                        return Err(Contradiction(format!(
                            "step {step} attempt {attempt} is reported twice with different results"
                        )))
                    }
                    None => {}
                }
                // What ran ended after it started; only "it never began" needs no start.
                if *attempt > 0 && *status != Status::Aborted && !self.started.contains(&k) {
                    return Err(Contradiction(format!(
                        "step {step} attempt {attempt} ends {status} without having started"
                    )));
                }
                if *attempt == 0 && self.started.iter().any(|(s, _)| s == step) {
                    return Err(Contradiction(format!(
                        "step {step} is reported skipped after it ran"
                    )));
                }
                self.ended.insert(k, r.clone());
                Ok(true)
            }
            Record::Done { .. } => Ok(true),
        }
    }

    /// Attempts that started and never ended (their init is gone, or still running).
    pub fn open(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self
            .started
            .iter()
            .filter(|k| !self.ended.contains_key(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The attempts of `step` that started.
    pub fn started(&self, step: &str) -> usize {
        self.started.iter().filter(|(s, _)| s == step).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(step: &str, attempt: u32, status: Status) -> Record {
        Record::End {
            step: step.into(),
            status,
            code: None,
            ms: 1,
            attempt,
            reason: None,
        }
    }

    #[test]
    fn repeats_are_dropped_and_contradictions_refused() {
        let mut a = Attempts::default();
        let s = Record::Start {
            step: "1".into(),
            name: None,
            attempt: 1,
        };
        assert_eq!(a.admit(&s), Ok(true));
        assert_eq!(a.admit(&s), Ok(false));
        assert_eq!(a.open(), [("1".to_string(), 1)]);
        assert_eq!(a.admit(&end("1", 1, Status::Failed)), Ok(true));
        assert_eq!(a.admit(&end("1", 1, Status::Failed)), Ok(false));
        assert!(a.admit(&end("1", 1, Status::Passed)).is_err());
        assert!(a.open().is_empty());
        // A second attempt is new; "aborted before it began" needs no start.
        assert_eq!(a.admit(&end("1", 2, Status::Aborted)), Ok(true));
        assert_eq!(a.started("1"), 1);
    }

    #[test]
    fn records_out_of_the_order_of_attempts_are_contradictions() {
        let start = |step: &str, attempt| Record::Start {
            step: step.into(),
            name: None,
            attempt,
        };
        let mut a = Attempts::default();
        // An end of what never started (a forged pass).
        assert!(a.admit(&end("1", 1, Status::Passed)).is_err());
        // A second attempt before the first ended.
        a.admit(&start("2", 1)).unwrap();
        assert!(a.admit(&start("2", 2)).is_err());
        a.admit(&end("2", 1, Status::Failed)).unwrap();
        a.admit(&start("2", 2)).unwrap();
        // Skipped after it ran, or run after it was skipped.
        assert!(a.admit(&end("2", 0, Status::Skipped)).is_err());
        a.admit(&end("3", 0, Status::Skipped)).unwrap();
        assert!(a.admit(&start("3", 1)).is_err());
    }
}
