//! stepinit: a small static `/init` that is a real PID 1 and runs a container's steps in sequence.
//!
//! [`cli_main`] is the whole command line (see `docs/init-cli.md` and `init/README.md`); the
//! `init` binary is a thin wrapper around it, and `stepctl` embeds it.

pub mod auth;
pub mod fs;
pub mod journal;
pub mod machine;
pub mod proc;
pub mod run;
pub mod setup;
pub mod sys;
pub mod wrap;

use std::ffi::OsString;

/// Runs the init's CLI in-process; `args` is argv without `argv[0]`. Returns the exit code.
pub fn cli_main(args: Vec<OsString>) -> i32 {
    match args.first().map(|a| a.as_encoded_bytes()) {
        Some(b"run") => run::run(&args[1..]),
        Some(b"setup") => setup::run(&args[1..]),
        _ => wrap::run(args),
    }
}

/// A fresh directory for a unit test, `$TMPDIR/stepinit-TAG-PID` (emptied first).
#[cfg(test)]
pub(crate) fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("stepinit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
