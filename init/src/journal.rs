//! The state across containers: one append-only journal per container, `DIR/journal.N`, whose
//! lines are the machine's [`Entry`]s, each authenticated by an HMAC chain under the run's key
//! derived for "journal" and the spec (see [`crate::auth`]): steps never see it.
//!
//! ```text
//! stepinit-journal 1 3f2a...-12 1 <tag>       header: format, spec fingerprint, container
//! B {"version":2,...} <tag>                    snapshot: the state this container started from
//! S 4 1 916489 <tag>                           entries (see `encode`)
//! E 4 failed 1 12 1 f - <tag>
//! D failed 4210 <tag>                          the seal: this container is done
//! ```
//!
//! `tag` is 32 hex digits: the first 128 bits of HMAC-SHA256(key, previous tag || line), the
//! header's previous tag being zero. So no line can be changed, dropped, moved or copied from
//! another journal without the next reader seeing it; all a writer without the key can do is
//! cut a journal short, or remove it. The rules of the machine make both safe: a step of an ended
//! container that never got its end is reported `aborted` (a failure). A reader stops at the first
//! line that fails: a complete line means tampering and fails the workflow (a taint); an
//! incomplete last line is what a killed writer leaves (one `write` per line), and is dropped.
//!
//! Files are read without following symlinks, without blocking (a planted FIFO), only if regular,
//! with bounded lines; the memory a journal costs is bounded by the spec, not by the file.

use crate::auth::{hex_val, Tagger as Chain, TAG};
pub use crate::auth::{Key, KEY_ENV};
use crate::fs::{self, Fd};
use crate::machine::{Entry, Machine, State};
use crate::sys::{self, Errno};
use std::path::{Path, PathBuf};
use stepinit_protocol::{Record, Status};

/// First word of every journal.
const MAGIC: &str = "stepinit-journal 1";

/// The journal container `group` writes in the state directory.
pub fn file_name(group: u32) -> String {
    format!("journal.{group}")
}

/// This container's journal, open for appending.
pub struct Journal {
    fd: Fd,
    chain: Chain,
    prev: [u8; TAG],
    line: Vec<u8>,
    pub path: PathBuf,
}

impl Journal {
    /// Appends one entry, in one `write`.
    pub fn append(&mut self, e: &Entry) -> Result<(), Errno> {
        self.line.clear();
        encode(e, &mut self.line);
        self.write_line()
    }

    fn write_line(&mut self) -> Result<(), Errno> {
        let tag = self.chain.tag(&[&self.prev, &self.line]);
        self.line.push(b' ');
        for b in tag {
            self.line.push(HEX[(b >> 4) as usize]);
            self.line.push(HEX[(b & 15) as usize]);
        }
        self.line.push(b'\n');
        sys::write_all(self.fd.0, &self.line)?;
        self.prev = tag;
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What opening the state gave.
pub struct Opened {
    /// This container's journal; None when none could be made (the taint says why: the
    /// workflow fails, and an intermediate container exits 3).
    pub journal: Option<Journal>,
    /// The records of the last entry replayed: their writer may have died before printing them.
    pub reprint: Vec<Record>,
    /// Why the state cannot be trusted, when it cannot (the workflow then fails).
    pub taint: Option<String>,
}

/// Why the state cannot be opened at all (exit 3): a state directory that is none, or the
/// journal of another spec (the state directory of another run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError(pub String);

/// Opens the state of `m`'s container in directory `dir`: replays into `m` its own journal (a
/// restarted container) or else the newest of its predecessors', and opens its own for appending
/// (new ones start with the header and a snapshot of what was replayed).
pub fn open(dir: &Path, m: &mut Machine, key: &Key) -> Result<Opened, OpenError> {
    let shown = dir.display();
    let dfd = open_dir(dir)?;
    let chain = Chain::new(key);
    let group = m.group();
    let own = file_name(group);
    let mut taint: Option<String> = None;
    let note = |t: &mut Option<String>, why: String| {
        sys::eprint_line(&why);
        t.get_or_insert(why);
    };
    // Our own journal: a restart of this container continues it.
    match fs::open_at(
        dfd.0,
        Path::new(&own),
        libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    ) {
        Ok(fd) => {
            // SAFETY: geteuid cannot fail.
            let mine = fs::fstat(fd.0).is_ok_and(|st| {
                st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && st.st_uid == unsafe { libc::geteuid() }
            });
            if mine {
                let r = replay(&fd, &format!("{shown}/{own}"), group, m, &chain)?;
                if let Some(t) = r.taint {
                    note(&mut taint, t);
                }
                if r.lines > 0 {
                    if !m.already_finished() {
                        m.restarted();
                        note(&mut taint, format!(
                            "{shown}/{own}: this container's init was restarted (killed before its end): the workflow fails, its steps do not run on as if nothing happened"
                        ));
                    }
                    // What a killed writer left half-written goes; what follows is ours.
                    // SAFETY: fd is ours.
                    unsafe { libc::ftruncate(fd.0, r.valid_len as libc::off_t) };
                    // SAFETY: fd is ours.
                    unsafe { libc::lseek(fd.0, 0, libc::SEEK_END) };
                    let journal = Journal {
                        fd,
                        chain,
                        prev: r.prev,
                        line: Vec::new(),
                        path: dir.join(&own),
                    };
                    return Ok(Opened {
                        journal: Some(journal),
                        reprint: r.reprint,
                        taint,
                    });
                }
                // Empty (its init was killed before the header), or not a journal: made anew.
            } else {
                note(
                    &mut taint,
                    format!("{shown}/{own}: planted before this container started (not a regular file of this user)"),
                );
            }
        }
        Err(Errno(libc::ENOENT)) => {}
        Err(Errno(libc::ELOOP)) => note(&mut taint, format!("{shown}/{own}: planted as a symlink")),
        // A directory, a file we may not open: planted too.
        Err(e) => note(
            &mut taint,
            format!("{shown}/{own}: planted before this container started ({e})"),
        ),
    }
    // A new journal: continue from the newest predecessor that left one.
    let mut reprint = Vec::new();
    let mut replayed = false;
    for g in (0..group).rev() {
        let name = file_name(g);
        let path = format!("{shown}/{name}");
        let fd = match fs::open_at(
            dfd.0,
            Path::new(&name),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        ) {
            Ok(fd) => fd,
            Err(Errno(libc::ENOENT)) => continue,
            Err(e) => {
                note(&mut taint, format!("{path}: cannot be read: {e}"));
                continue;
            }
        };
        let r = replay(&fd, &path, g, m, &chain)?;
        if let Some(t) = r.taint {
            note(&mut taint, t);
        }
        if r.lines > 0 {
            // Its seal is its own (`done` with last:false); anything else may be unprinted.
            reprint = r
                .reprint
                .into_iter()
                .filter(|x| !matches!(x, Record::Done { .. }))
                .collect();
            replayed = true;
            break;
        }
    }
    let journal = match create(&dfd, dir, &own, chain, m, replayed) {
        Ok(j) => Some(j),
        Err(why) => {
            note(&mut taint, why);
            None
        }
    };
    Ok(Opened {
        journal,
        reprint,
        taint,
    })
}

/// Makes this container's journal anew (whatever was planted at its name removed first) with
/// its header and, when it continues a predecessor, the snapshot. Err: why it could not.
fn create(
    dfd: &Fd,
    dir: &Path,
    own: &str,
    chain: Chain,
    m: &Machine,
    snapshot: bool,
) -> Result<Journal, String> {
    let path = dir.join(own);
    let shown = path.display();
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut fd = None;
    // Twice at most: once more after removing what was there (or was planted meanwhile).
    for _ in 0..2 {
        match fs::open_at(dfd.0, Path::new(own), flags, 0o644) {
            Ok(f) => {
                fd = Some(f);
                break;
            }
            Err(Errno(libc::EEXIST)) => unlink_any(dfd, own)
                .map_err(|e| format!("{shown}: planted, and cannot be removed: {e}"))?,
            Err(e) => return Err(format!("{shown}: cannot create: {e}")),
        }
    }
    let fd = fd.ok_or_else(|| format!("{shown}: planted again as it was removed"))?;
    // Readable by the next container's init, whatever our umask (it may run as another user).
    // SAFETY: fd is ours.
    unsafe { libc::fchmod(fd.0, 0o644) };
    let mut j = Journal {
        fd,
        chain,
        prev: [0; TAG],
        line: format!("{MAGIC} {} {}", m.fingerprint(), m.group()).into_bytes(),
        path: path.clone(),
    };
    let err = |e: Errno| format!("{shown}: cannot write: {e}");
    j.write_line().map_err(err)?;
    if snapshot {
        j.line.clear();
        j.line.extend_from_slice(b"B ");
        j.line
            .extend_from_slice(&serde_json::to_vec(&m.state()).unwrap_or_default());
        j.write_line().map_err(err)?;
    }
    Ok(j)
}

/// Removes a name, whatever it is (a file, a link, an empty directory).
fn unlink_any(dir: &Fd, name: &str) -> Result<(), Errno> {
    let c = std::ffi::CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: valid name relative to our directory fd.
    unsafe {
        if libc::unlinkat(dir.0, c.as_ptr(), 0) == 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e.0 == libc::EISDIR && libc::unlinkat(dir.0, c.as_ptr(), libc::AT_REMOVEDIR) == 0 {
            return Ok(());
        }
        Err(if e.0 == libc::EISDIR {
            Errno::last()
        } else {
            e
        })
    }
}

/// Opens (creating it, and its parents, when missing) the state directory; never a symlink.
fn open_dir(dir: &Path) -> Result<Fd, OpenError> {
    let shown = dir.display();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(OpenError(format!(
                "{shown}: --state must be a directory, and this is not one"
            )))
        }
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| {
            OpenError(format!(
                "{shown}: cannot create the state directory: {}",
                os_err(&e)
            ))
        })?,
    }
    fs::open_at(
        libc::AT_FDCWD,
        dir,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(|e| OpenError(format!("{shown}: cannot open the state directory: {e}")))
}

fn os_err(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => Errno(n).to_string(),
        None => e.to_string(),
    }
}

/// What replaying one journal gave.
struct Replay {
    /// Valid lines (the header included).
    lines: usize,
    valid_len: u64,
    prev: [u8; TAG],
    reprint: Vec<Record>,
    taint: Option<String>,
}

/// Replays journal `path` of container `from` into `m` up to its first line that fails. Err
/// only for a journal of another spec (the state directory of another run).
fn replay(
    fd: &Fd,
    path: &str,
    from: u32,
    m: &mut Machine,
    chain: &Chain,
) -> Result<Replay, OpenError> {
    match fs::fstat(fd.0) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
        _ => {
            return Ok(Replay {
                lines: 0,
                valid_len: 0,
                prev: [0; TAG],
                reprint: Vec::new(),
                taint: Some(format!("{path}: not a regular file")),
            })
        }
    }
    replay_from(&mut |buf| sys::read(fd.0, buf), path, from, m, chain)
}

/// What [`replay_bytes`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Lines that verified and applied (the header included).
    pub lines: usize,
    /// Why the rest was not trusted (None: all of it was, or only a partial last line was left).
    pub taint: Option<String>,
    /// The records of the last entry applied.
    pub reprint: Vec<Record>,
}

/// Replays `bytes` as the journal of container `from` into `m` (the fuzzers' way in: the same
/// code as [`open`] minus the files). Err: a journal of another spec.
pub fn replay_bytes(
    bytes: &[u8],
    from: u32,
    m: &mut Machine,
    key: &Key,
) -> Result<Replayed, OpenError> {
    let mut rest = bytes;
    let mut read = |buf: &mut [u8]| {
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        Ok(n)
    };
    let r = replay_from(&mut read, "journal", from, m, &Chain::new(key))?;
    Ok(Replayed {
        lines: r.lines,
        taint: r.taint,
        reprint: r.reprint,
    })
}

/// Container `from`'s journal of the spec `m` runs, with these entries (after a snapshot, when
/// given), signed with `key` as an init signs it (the fuzzers' way to make journals that verify).
pub fn sign(
    m: &Machine,
    from: u32,
    snapshot: Option<&State>,
    entries: &[Entry],
    key: &Key,
) -> Vec<u8> {
    let chain = Chain::new(key);
    let mut prev = [0u8; TAG];
    let mut out = Vec::new();
    let mut line = |body: Vec<u8>, out: &mut Vec<u8>| {
        let tag = chain.tag(&[&prev, &body]);
        out.extend_from_slice(&body);
        out.push(b' ');
        for b in tag {
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
        out.push(b'\n');
        prev = tag;
    };
    line(
        format!("{MAGIC} {} {from}", m.fingerprint()).into_bytes(),
        &mut out,
    );
    if let Some(s) = snapshot {
        let mut b = b"B ".to_vec();
        b.extend_from_slice(&serde_json::to_vec(s).unwrap_or_default());
        line(b, &mut out);
    }
    for e in entries {
        let mut b = Vec::new();
        encode(e, &mut b);
        line(b, &mut out);
    }
    out
}

/// [`replay`] on what `read` gives.
fn replay_from(
    read: &mut dyn FnMut(&mut [u8]) -> Result<usize, Errno>,
    path: &str,
    from: u32,
    m: &mut Machine,
    chain: &Chain,
) -> Result<Replay, OpenError> {
    let mut r = Replay {
        lines: 0,
        valid_len: 0,
        prev: [0; TAG],
        reprint: Vec::new(),
        taint: None,
    };
    // The longest line an init writes: the snapshot, a few hundred bytes a node at most.
    let max_line = 64 * 1024 + 512 * m.node_count();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut eof = false;
    loop {
        // Complete lines first.
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line_no = r.lines + 1;
            match check_line(&buf[..nl], &r.prev, chain) {
                None => {
                    r.taint = Some(format!("{path}: line {line_no} fails verification (the state was changed by someone without the key)"));
                    return Ok(r);
                }
                Some((body, tag)) => {
                    if let Err(why) = apply_line(body, line_no, from, m, &mut r) {
                        if let LineError::OtherSpec(s) = why {
                            return Err(OpenError(format!("{path}: {s}")));
                        }
                        if let LineError::Bad(s) = why {
                            r.taint = Some(format!("{path}: line {line_no}: {s}"));
                        }
                        return Ok(r);
                    }
                    r.prev = tag;
                    r.lines += 1;
                    r.valid_len += nl as u64 + 1;
                }
            }
            buf.drain(..=nl);
        }
        if buf.len() > max_line {
            r.taint = Some(format!(
                "{path}: line {} is longer than any the init writes",
                r.lines + 1
            ));
            return Ok(r);
        }
        if eof {
            // A partial last line: what a killed writer leaves. Dropped, not a taint.
            return Ok(r);
        }
        match read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                r.taint = Some(format!("{path}: cannot read: {e}"));
                return Ok(r);
            }
        }
    }
}

/// The body and tag of a line whose tag is right.
fn check_line<'a>(
    line: &'a [u8],
    prev: &[u8; TAG],
    chain: &Chain,
) -> Option<(&'a [u8], [u8; TAG])> {
    let sp = line.iter().rposition(|&b| b == b' ')?;
    let (body, hex) = (&line[..sp], &line[sp + 1..]);
    if hex.len() != 2 * TAG {
        return None;
    }
    let mut tag = [0u8; TAG];
    for (i, pair) in hex.chunks(2).enumerate() {
        tag[i] = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    let want = chain.tag(&[prev, body]);
    // Constant time: the comparison says nothing about how much of a forged tag was right.
    let diff = want
        .iter()
        .zip(tag.iter())
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    (diff == 0).then_some((body, tag))
}

enum LineError {
    /// The journal of another spec (a state directory of another run): exit 3.
    OtherSpec(String),
    /// A line the init cannot have written: a taint.
    Bad(String),
}

fn apply_line(
    body: &[u8],
    line_no: usize,
    from: u32,
    m: &mut Machine,
    r: &mut Replay,
) -> Result<(), LineError> {
    let bad = |s: &str| LineError::Bad(s.to_string());
    if line_no == 1 {
        let want = format!("{MAGIC} {} {from}", m.fingerprint());
        if body == want.as_bytes() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(body);
        let mut w = text.split(' ');
        return Err(match (w.next(), w.next(), w.next(), w.next()) {
            (Some("stepinit-journal"), Some("1"), Some(fp), Some(c))
                if fp != m.fingerprint() && c == from.to_string() =>
            {
                LineError::OtherSpec("the state was written for another spec".into())
            }
            _ => bad("not the header of this container's journal"),
        });
    }
    if let Some(json) = body.strip_prefix(b"B ") {
        if line_no != 2 {
            return Err(bad("a snapshot after the journal's start"));
        }
        let s: State =
            serde_json::from_slice(json).map_err(|e| LineError::Bad(format!("snapshot: {e}")))?;
        if s.container != from {
            return Err(bad("the snapshot of another container"));
        }
        r.reprint.clear();
        return m.restore(s).map_err(LineError::Bad);
    }
    let e = decode(body).ok_or_else(|| bad("not an entry"))?;
    r.reprint = m.replay(from, &e).map_err(LineError::Bad)?;
    Ok(())
}

/// Writes an entry's line body (no tag): a letter, then space-separated fields; free text is
/// `-` (none) or `=` and the text with `%`, space and control bytes as `%XX`.
pub fn encode(e: &Entry, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = match e {
        Entry::Start { node, attempt, at } => write!(out, "S {node} {attempt} {at}"),
        Entry::End {
            node,
            status,
            code,
            ms,
            attempt,
            fin,
            reason,
        } => {
            let _ = write!(out, "E {node} {status} ");
            match code {
                Some(c) => {
                    let _ = write!(out, "{c}");
                }
                None => out.push(b'-'),
            }
            let _ = write!(out, " {ms} {attempt} {} ", if *fin { 'f' } else { 'r' });
            text(out, reason.as_deref());
            Ok(())
        }
        Entry::Settle { node } => write!(out, "F {node}"),
        Entry::Skip { node, reason } => {
            let _ = write!(out, "K {node} ");
            text(out, Some(reason));
            Ok(())
        }
        Entry::TimedOut { node } => write!(out, "T {node}"),
        Entry::Abort => write!(out, "A"),
        Entry::Taint { reason } => {
            out.extend_from_slice(b"X ");
            text(out, Some(reason));
            Ok(())
        }
        Entry::Done { status, ms } => write!(out, "D {status} {ms}"),
    };
}

fn text(out: &mut Vec<u8>, t: Option<&str>) {
    let Some(t) = t else {
        out.push(b'-');
        return;
    };
    out.push(b'=');
    for &b in t.as_bytes() {
        if b <= b' ' || b == b'%' || b == 0x7f {
            out.push(b'%');
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.push(b);
        }
    }
}

fn untext(w: &[u8]) -> Option<Option<String>> {
    if w == b"-" {
        return Some(None);
    }
    let t = w.strip_prefix(b"=")?;
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'%' {
            let h = hex_val(*t.get(i + 1)?)?;
            let l = hex_val(*t.get(i + 2)?)?;
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Some)
}

/// Parses an entry's line body; None: not one an init writes.
pub fn decode(body: &[u8]) -> Option<Entry> {
    let mut w = body.split(|&b| b == b' ');
    let kind = w.next()?;
    let mut field = || w.next();
    fn num<T: std::str::FromStr>(f: Option<&[u8]>) -> Option<T> {
        std::str::from_utf8(f?).ok()?.parse().ok()
    }
    let status = |f: Option<&[u8]>| Status::parse(std::str::from_utf8(f?).ok()?);
    let e = match kind {
        b"S" => Entry::Start {
            node: num(field())?,
            attempt: num(field())?,
            at: num(field())?,
        },
        b"E" => Entry::End {
            node: num(field())?,
            status: status(field())?,
            code: match field()? {
                b"-" => None,
                c => Some(num(Some(c))?),
            },
            ms: num(field())?,
            attempt: num(field())?,
            fin: match field()? {
                b"f" => true,
                b"r" => false,
                _ => return None,
            },
            reason: untext(field()?)?,
        },
        b"F" => Entry::Settle {
            node: num(field())?,
        },
        b"K" => Entry::Skip {
            node: num(field())?,
            reason: untext(field()?)??,
        },
        b"T" => Entry::TimedOut {
            node: num(field())?,
        },
        b"A" => Entry::Abort,
        b"X" => Entry::Taint {
            reason: untext(field()?)??,
        },
        b"D" => Entry::Done {
            status: status(field())?,
            ms: num(field())?,
        },
        _ => return None,
    };
    // Nothing may follow the fields.
    if field().is_some() {
        return None;
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_roundtrip_through_their_text() {
        let all = [
            Entry::Start {
                node: 3,
                attempt: 2,
                at: u64::MAX,
            },
            Entry::End {
                node: 1,
                status: Status::Failed,
                code: Some(-2),
                ms: 12,
                attempt: 1,
                fin: false,
                reason: Some("a b%c\n\u{1e}é=-".into()),
            },
            Entry::End {
                node: 1,
                status: Status::Skipped,
                code: None,
                ms: 0,
                attempt: 0,
                fin: true,
                reason: None,
            },
            Entry::End {
                node: 1,
                status: Status::Passed,
                code: Some(0),
                ms: 0,
                attempt: 1,
                fin: true,
                reason: Some(String::new()),
            },
            Entry::Settle { node: 9 },
            Entry::Skip {
                node: 2,
                reason: "-".into(),
            },
            Entry::TimedOut { node: 4 },
            Entry::Abort,
            Entry::Taint {
                reason: "x y".into(),
            },
            Entry::Done {
                status: Status::Aborted,
                ms: 7,
            },
        ];
        for e in all {
            let mut b = Vec::new();
            encode(&e, &mut b);
            assert!(!b.contains(&b'\n'), "{b:?}");
            assert_eq!(
                decode(&b),
                Some(e.clone()),
                "{}",
                String::from_utf8_lossy(&b)
            );
        }
        for junk in [
            &b""[..],
            b"S",
            b"S 1 2",
            b"S 1 2 3 4",
            b"E 1 fine - 0 1 f -",
            b"Q 1",
            b"K 1 -",
            b"S -1 1 1",
            b"X =%zz",
        ] {
            assert_eq!(decode(junk), None, "{}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn tags_chain_and_depend_on_the_key() {
        let (k1, k2) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
        let (c1, c2) = (Chain::new(&k1), Chain::new(&k2));
        let t = c1.tag(&[&[0; TAG], b"S 1 1 1"]);
        assert_ne!(t, c2.tag(&[&[0; TAG], b"S 1 1 1"]));
        assert_ne!(
            t,
            c1.tag(&[&t, b"S 1 1 1"]),
            "the same line elsewhere in the chain"
        );
        let mut line = b"S 1 1 1 ".to_vec();
        for b in t {
            line.push(HEX[(b >> 4) as usize]);
            line.push(HEX[(b & 15) as usize]);
        }
        assert_eq!(check_line(&line, &[0; TAG], &c1).map(|x| x.1), Some(t));
        assert!(check_line(&line, &[0; TAG], &c2).is_none());
        let mut flipped = line.clone();
        flipped[2] = b'2';
        assert!(check_line(&flipped, &[0; TAG], &c1).is_none());
    }

    fn three_steps() -> Machine {
        let spec: stepinit_protocol::Spec = serde_json::from_str(
            r#"{"version":1,"steps":[{"command":["a"]},{"command":["b"]},{"command":["c"]}]}"#,
        )
        .unwrap();
        Machine::new(&spec, 0, "sh").unwrap()
    }

    #[test]
    fn a_signed_journal_replays_and_any_change_is_a_taint_but_a_torn_end() {
        let key = Key::from_bytes([7; 32]);
        let m = three_steps();
        let entries = [
            Entry::Start {
                node: 0,
                attempt: 1,
                at: 10,
            },
            Entry::Start {
                node: 1,
                attempt: 1,
                at: 11,
            },
            Entry::End {
                node: 1,
                status: Status::Failed,
                code: Some(1),
                ms: 1,
                attempt: 1,
                fin: true,
                reason: None,
            },
        ];
        let j = sign(&m, 0, None, &entries, &key);
        let r = replay_bytes(&j, 0, &mut three_steps(), &key).unwrap();
        assert_eq!((r.lines, r.taint.as_deref()), (4, None));
        assert!(matches!(
            r.reprint[..],
            [Record::End {
                status: Status::Failed,
                ..
            }]
        ));
        // Every single flipped byte of a complete line is seen.
        for i in 0..j.len() - 1 {
            if j[i] == b'\n' {
                continue;
            }
            let mut bad = j.clone();
            bad[i] ^= 0x01;
            let r = replay_bytes(&bad, 0, &mut three_steps(), &key);
            let taint = r.map(|r| r.taint).unwrap_or(Some("other spec".into()));
            assert!(taint.is_some(), "byte {i} flipped unseen");
        }
        // A journal cut inside its last line (a killed writer): the lines before it, no taint.
        let cut = &j[..j.len() - 5];
        let r = replay_bytes(cut, 0, &mut three_steps(), &key).unwrap();
        assert_eq!((r.lines, r.taint), (3, None));
        // Another key verifies nothing; a journal of container 1 is not container 0's.
        let r = replay_bytes(&j, 0, &mut three_steps(), &Key::from_bytes([8; 32])).unwrap();
        assert_eq!(r.lines, 0);
        assert!(r.taint.unwrap().contains("line 1 fails verification"));
        let other = sign(&m, 1, None, &entries, &key);
        let r = replay_bytes(&other, 0, &mut three_steps(), &key).unwrap();
        assert!(r.taint.unwrap().contains("not the header"));
        // Entries that verify but cannot have been written (a second end) are a taint too.
        let mut twice = entries.to_vec();
        twice.push(entries[2].clone());
        let r = replay_bytes(
            &sign(&m, 0, None, &twice, &key),
            0,
            &mut three_steps(),
            &key,
        )
        .unwrap();
        assert_eq!(r.lines, 4);
        assert!(r.taint.unwrap().contains("line 5"));
    }
}
