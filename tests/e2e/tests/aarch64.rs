//! The init built for aarch64-unknown-linux-musl: a static arm64 ELF that works under
//! `qemu-aarch64-static` (called explicitly: binfmt is not registered). The children it spawns are
//! host programs, run natively by the kernel (qemu-user does not intercept execve), which is fine:
//! what is tested is the arm64 init's own code (signals, timers, reaping, framing, exit codes).
//! `images/build --arch aarch64` (run by tests/e2e/run) builds the binary and the arm64 image.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use stepinit_e2e::*;

fn aarch64_init() -> PathBuf {
    let p = repo_root().join("target/aarch64-unknown-linux-musl/release/init");
    assert!(
        p.is_file(),
        "{} is missing: run images/build --arch aarch64 (tests/e2e/run does)",
        p.display()
    );
    p
}

fn qemu(args: &[&str]) -> Output {
    let mut c = Command::new("qemu-aarch64-static");
    c.arg(aarch64_init()).args(args);
    run_limited(c, Duration::from_secs(60))
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}

#[test]
fn it_is_a_static_aarch64_elf() {
    let bytes = std::fs::read(aarch64_init()).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(bytes[4], 2, "64-bit");
    assert_eq!(bytes[5], 1, "little-endian");
    assert_eq!(u16_at(&bytes, 18), 183, "e_machine EM_AARCH64");
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(&bytes, 54) as usize, u16_at(&bytes, 56) as usize);
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(bytes[phoff + i * phentsize..][..4].try_into().unwrap());
        assert_ne!(p_type, 3, "PT_INTERP: the init must be statically linked");
        assert_ne!(p_type, 2, "PT_DYNAMIC: the init must be statically linked");
    }
    assert!(bytes.len() < 1_000_000, "{} bytes", bytes.len());
}

#[test]
fn wrap_mode_works_under_qemu() {
    let o = qemu(&[]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage"));
    for (args, want) in [
        (&["--", "/no/such/program"][..], 127),
        (&["--", "/dev/null"][..], 126),
        (&["--", "/bin/sh", "-c", "exit 7"][..], 7),
        (&["--", "/bin/sh", "-c", "kill -TERM $$"][..], 143),
        (&["--timeout", "300ms", "--", "sleep", "10"][..], 124),
        (
            &[
                "--grace",
                "200ms",
                "--timeout",
                "300ms",
                "--",
                "sh",
                "-c",
                "trap '' TERM; sleep 10",
            ][..],
            124,
        ),
    ] {
        let o = qemu(args);
        assert_eq!(
            o.status.code(),
            Some(want),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn report_mode_frames_output_under_qemu() {
    let o = qemu(&[
        "--report",
        "--",
        "/bin/sh",
        "-c",
        "printf 'x\\036y'; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5));
    let logs = Logs::decode(&o.stdout, &o.stderr);
    logs.assert_clean("aarch64 --report");
    assert_eq!(logs.stdout, b"x\x1ey");
    assert_eq!(logs.end("1").0, Status::Failed);
    assert_eq!(logs.end("1").1, Some(5));
    assert_eq!(logs.done(), (Status::Failed, true));
}

#[test]
fn spec_mode_works_under_qemu() {
    let dir = std::env::temp_dir().join(unique("aarch64-spec"));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = new_spec(
        vec![],
        vec![
            Step {
                id: Some("a".into()),
                command: vec!["/bin/sh".into(), "-c".into(), "echo a".into()],
                ..Default::default()
            },
            Step {
                id: Some("b".into()),
                command: vec!["/bin/sh".into(), "-c".into(), "exit 3".into()],
                ..Default::default()
            },
            Step {
                id: Some("c".into()),
                command: vec!["/bin/true".into()],
                ..Default::default()
            },
        ],
    );
    let path = dir.join("spec.json");
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let term = dir.join("term");
    let o = qemu(&[
        "run",
        path.to_str().unwrap(),
        "--termination-log",
        term.to_str().unwrap(),
    ]);
    let logs = Logs::decode(&o.stdout, &o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    logs.assert_clean("aarch64 spec");
    assert_eq!(logs.stdout_str(), "a\n");
    assert_eq!(logs.status("a"), Status::Passed);
    assert_eq!(logs.end("b").1, Some(3));
    assert_eq!(logs.status("c"), Status::Skipped);
    assert_eq!(logs.done(), (Status::Failed, true));
}

#[test]
fn the_arm64_init_image_is_built_for_arm64() {
    let arch = podman_ok([
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        "localhost/stepinit/init:dev-arm64",
    ]);
    assert_eq!(arch.trim(), "linux/arm64");
    let arch = podman_ok([
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        INIT_IMAGE,
    ]);
    assert_eq!(arch.trim(), "linux/amd64");
    let m = podman_ok([
        "manifest",
        "inspect",
        "localhost/stepinit/init:dev-multiarch",
    ]);
    let v: serde_json::Value = serde_json::from_str(&m).expect("manifest JSON");
    let mut archs: Vec<String> = v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            m["platform"]["architecture"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
}

#[test]
fn setup_copies_the_arm64_init_itself_under_qemu() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(unique("aarch64-setup"));
    let o = qemu(&["setup", dir.to_str().unwrap()]);
    let copied = std::fs::read(dir.join("init"));
    let mode = std::fs::metadata(dir.join("init")).map(|m| m.permissions().mode() & 0o7777);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // /proc/self/exe under qemu-user is the emulated program, not qemu: the copy is the arm64 init.
    assert_eq!(
        copied.expect("DIR/init"),
        std::fs::read(aarch64_init()).unwrap()
    );
    assert_eq!(mode.unwrap(), 0o555);
}
