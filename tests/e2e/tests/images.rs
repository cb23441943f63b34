//! The images built by `images/build`: what is in them, and that they run.

use std::collections::BTreeSet;
use std::time::Duration;

use stepinit_e2e::*;

/// The paths in an image's file system (exported from a created, never started, container).
fn files(image: &str) -> BTreeSet<String> {
    let name = unique("files");
    podman_ok(["create", "--name", &name, image]);
    let _guard = CtrGuard(name.clone());
    let mut export = podman_cmd(["export", &name]);
    export.stdout(std::process::Stdio::piped());
    let mut child = export.spawn().expect("podman export");
    let tar = std::process::Command::new("tar")
        .arg("-t")
        .stdin(child.stdout.take().unwrap())
        .output()
        .expect("tar -t");
    assert!(
        child.wait().unwrap().success(),
        "podman export {image} failed"
    );
    assert!(
        tar.status.success(),
        "tar -t failed on the export of {image}"
    );
    String::from_utf8_lossy(&tar.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        // podman adds mount points for these to every container
        .filter(|l| {
            ![
                "dev",
                "proc",
                "sys",
                "etc",
                "run",
                "etc/hosts",
                "etc/resolv.conf",
                "etc/hostname",
                "run/.containerenv",
                "etc/passwd",
                "etc/group",
            ]
            .contains(&l.as_str())
        })
        .collect()
}

#[test]
fn init_image_holds_only_the_init_and_sh() {
    require_images();
    let f = files(INIT_IMAGE);
    let want: BTreeSet<String> = ["init", "bin", "bin/sh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(f, want, "files of {INIT_IMAGE}");
    // Static: it runs as PID 1 in an image with no libc, and its sh works.
    let o = podman([
        "run",
        "--rm",
        INIT_IMAGE,
        "--",
        "/bin/sh",
        "-c",
        "echo $$; exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The shell is the init's child, not PID 1.
    let pid: u32 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(pid, 1, "the init must be PID 1, not sh");
}

#[test]
fn scratch_image_has_no_shell() {
    require_images();
    let f = files(SCRATCH_IMAGE);
    let want: BTreeSet<String> = ["probe"].iter().map(|s| s.to_string()).collect();
    assert_eq!(f, want, "files of {SCRATCH_IMAGE}");
    let o = podman([
        "run",
        "--rm",
        SCRATCH_IMAGE,
        "echo",
        "hello",
        "::",
        "exit",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");
}

#[test]
fn user_image_runs_as_1001_in_its_workdir() {
    require_images();
    let cfg = podman_ok([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{.Config.WorkingDir}}",
        USER_IMAGE,
    ]);
    assert_eq!(cfg.trim(), "1001:1001 /app");
    let out = podman_ok([
        "run",
        "--rm",
        USER_IMAGE,
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $PWD",
    ]);
    assert_eq!(out, "1001:1001 /app\n");
}

#[test]
fn busybox_image_runs_as_root() {
    require_images();
    let o = run_limited(
        podman_cmd([
            "run",
            "--rm",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            "id -u; ls -ld /tmp",
        ]),
        Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(out.starts_with("0\ndrwxrwxrwt"), "{out}");
}
