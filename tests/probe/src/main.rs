//! `probe`: the one program of the shell-less (`FROM scratch`) test image, so steps there can do
//! real work without a shell. Built static for musl by `images/build`.
//!
//! Usage: `probe CMD [ARG...] [:: CMD [ARG...]]...` runs the commands in order and stops at the
//! first failing one (exit 1 with a message on stderr, or the code of `exit`).
//!
//! Commands:
//! - `echo WORD...` / `err WORD...`: print the words, space-separated, on stdout / stderr
//! - `write PATH TEXT` / `append PATH TEXT`: write (create/truncate) or append TEXT and a newline
//! - `read PATH`: print the file's content on stdout
//! - `expect PATH TEXT`: fail unless the file holds exactly TEXT and a newline
//! - `absent PATH`: fail unless PATH does not exist
//! - `id`: print `uid=U gid=G cwd=DIR home=HOME`
//! - `sleep MS`: sleep MS milliseconds
//! - `ignore-term`: ignore SIGTERM from now on (to test the grace period)
//! - `exit CODE`: exit with CODE now

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
    fn signal(sig: i32, handler: usize) -> usize;
}

const SIGTERM: i32 = 15;
const SIG_IGN: usize = 1;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: probe CMD [ARG...] [:: CMD [ARG...]]...");
        return ExitCode::from(2);
    }
    for cmd in args.split(|a| a == "::") {
        match run(cmd) {
            Ok(None) => {}
            Ok(Some(code)) => return ExitCode::from(code),
            Err(e) => {
                eprintln!("probe: {}: {e}", cmd.join(" "));
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Runs one command; `Ok(Some(code))` asks to exit now.
fn run(cmd: &[String]) -> Result<Option<u8>, String> {
    let arg = |i: usize| -> Result<&str, String> {
        cmd.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}"))
    };
    let io = |e: std::io::Error| e.to_string();
    match arg(0)? {
        "echo" => println!("{}", cmd[1..].join(" ")),
        "err" => eprintln!("{}", cmd[1..].join(" ")),
        "write" => std::fs::write(arg(1)?, format!("{}\n", arg(2)?)).map_err(io)?,
        "append" => {
            let text = arg(2)?;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(arg(1)?)
                .and_then(|mut f| writeln!(f, "{text}"))
                .map_err(io)?
        }
        "read" => {
            let data = std::fs::read(arg(1)?).map_err(io)?;
            std::io::stdout().write_all(&data).map_err(io)?;
        }
        "expect" => {
            let data = std::fs::read_to_string(arg(1)?).map_err(io)?;
            let want = format!("{}\n", arg(2)?);
            if data != want {
                return Err(format!("holds {data:?}, expected {want:?}"));
            }
        }
        "absent" => {
            if std::fs::symlink_metadata(arg(1)?).is_ok() {
                return Err("exists".into());
            }
        }
        "id" => {
            let cwd = std::env::current_dir().map_err(io)?;
            // SAFETY: getuid/getgid cannot fail and touch no memory.
            let (uid, gid) = unsafe { (getuid(), getgid()) };
            let home = std::env::var("HOME").unwrap_or_default();
            println!("uid={uid} gid={gid} cwd={} home={home}", cwd.display());
        }
        "sleep" => {
            let ms: u64 = arg(1)?.parse().map_err(|e| format!("bad MS: {e}"))?;
            std::thread::sleep(Duration::from_millis(ms));
        }
        "ignore-term" => {
            // SAFETY: setting a signal to SIG_IGN installs no handler code.
            unsafe { signal(SIGTERM, SIG_IGN) };
        }
        "exit" => {
            let code: u8 = arg(1)?.parse().map_err(|e| format!("bad CODE: {e}"))?;
            std::io::stdout().flush().map_err(io)?;
            return Ok(Some(code));
        }
        other => return Err(format!("unknown command {other:?}")),
    }
    std::io::stdout().flush().map_err(io)?;
    Ok(None)
}
