//! Image metadata against real software: Debian's `docker-registry` on 127.0.0.1 (open, with
//! htpasswd basic auth, and with JWT token auth served by a small token server in this file),
//! images built offline by `podman build` from scratch and pushed by `podman push` /
//! `podman manifest push`, and `podman image inspect`.
//!
//! Bearer tokens: the registry runs with its own `auth: token` (not a proxy standing in for
//! it), so the real registry checks what it would check in production: the JWT signature
//! through the `x5c` chain against its trusted root, issuer, audience, expiry and the granted
//! access. The token service here only authenticates the client and signs (RS256 via
//! `openssl dgst`); a token signed by an untrusted key is shown to be refused by the registry.
//!
//! Missing `docker-registry`, `podman`, `openssl` or `/bin/busybox` fail the tests (never skip):
//! `tests/install-deps` installs them.
//!
//! Layout: one fixture per test process builds the images, pushes them to a registry, records
//! the digests podman reports, stops that registry and removes the local images. Each test then
//! starts its own registry process(es) over the same (read-only) storage, so tests run in
//! parallel and every registry is killed by a Drop guard when its test ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use stepctl::image::{
    inspect_podman, parse_reference, pull_and_inspect_podman, ImageConfig, ImageError, Platform,
    RegistryClient, RegistryOptions,
};

const CONTAINERS_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/podman/containers.conf"
);
const USER: &str = "stepctl";
const PASSWORD: &str = "pa:ss w0rd";

// ---------------------------------------------------------------- process helpers

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run tests/install-deps (these tests never skip)"
    );
    let mut c = Command::new(name);
    c.env("CONTAINERS_CONF", CONTAINERS_CONF)
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that refuses connections for as long as this value lives: a TCP socket
/// bound to it but never listening (so no registry started by another test can take it).
struct ClosedPort {
    fd: libc::c_int,
    port: u16,
}

impl ClosedPort {
    fn new() -> ClosedPort {
        // SAFETY: plain socket calls on a fresh fd and a zeroed sockaddr_in we own.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut got_len = len;
            let rc = libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len);
            assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                fd,
                port: u16::from_be(got.sin_port),
            }
        }
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: closing the fd this value owns.
        unsafe {
            libc::close(self.fd);
        }
    }
}

fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn tmpdir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("registry-test-{}", std::process::id()))
        .join(format!("{name}-{}", unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------- the registry

enum Auth {
    None,
    Htpasswd(PathBuf),
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_cert: PathBuf,
    },
}

/// A running `docker-registry`, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Registry {
    fn start(storage: &Path, auth: Auth) -> Registry {
        Registry::start_tls(storage, auth, None)
    }

    /// With `tls = Some((certificate, key))` the registry speaks HTTPS only.
    fn start_tls(storage: &Path, auth: Auth, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tmpdir("registry");
        let tls_yaml = match tls {
            None => String::new(),
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
        };
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Htpasswd(p) => format!(
                "auth:\n  htpasswd:\n    realm: stepctl-test\n    path: {}\n",
                p.display()
            ),
            Auth::Token {
                realm,
                service,
                issuer,
                root_cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                root_cert.display()
            ),
        };
        for _attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: stepctl-test-secret\n{tls_yaml}{auth_yaml}",
                    storage.display()
                ),
            )
            .unwrap();
            let log = dir.join("registry.log");
            let logf = std::fs::File::create(&log).unwrap();
            let child = tool("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .expect("start docker-registry");
            let mut reg = Registry { child, addr, log };
            if reg.wait_ready() {
                return reg;
            }
            // Port taken in between, or a start failure: show it if it persists.
            drop(reg);
        }
        panic!(
            "docker-registry did not start; last log in {}",
            dir.display()
        );
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!(
                    "docker-registry exited with {status}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                let resp = resp.to_ascii_lowercase();
                // "listening on" in *our* log: the answer is not from another test's registry
                // that happened to get the same free port.
                if (resp.contains("docker-distribution-api-version: registry/2.0")
                    || resp.contains("client sent an http request to an https server"))
                    && self.log().contains(&format!("listening on {}", self.addr))
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The reference of `repository:tag` or `repository@digest` on this registry.
    fn image(&self, path: &str) -> String {
        format!("{}/{path}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Occurrences of `needle` in the access log once there are at least `min` (the log line
    /// may be written just after the response), or after 2 s.
    fn wait_log_count(&self, needle: &str, min: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let n = self.log().matches(needle).count();
            if n >= min || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- the fixture

struct Fixture {
    storage: PathBuf,
    /// Manifest digests as podman reported them when pushing.
    amd64: String,
    arm64: String,
    plain: String,
    multi: String,
    multi_docker: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

const CONTAINERFILE_AMD64: &str = r#"FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "sh", "-c"]
CMD ["echo amd64"]
WORKDIR /srv/app
USER 1234:2345
ENV GREETING="hello world" EMPTY=
"#;
const CONTAINERFILE_ARM64: &str = r#"FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "sh", "-c"]
CMD ["echo arm64"]
WORKDIR /srv/arm
USER 4321
"#;
const CONTAINERFILE_PLAIN: &str = "FROM scratch\nCOPY busybox /bin/busybox\n";

fn build_fixture() -> Fixture {
    // Remove what earlier, killed runs left behind.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("registry-test-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox missing: install busybox-static (tests/install-deps)"
    );
    let root = tmpdir("fixture");
    let storage = root.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let ctx = root.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    let id = unique();
    let name = |s: &str| format!("localhost/stepctl-registry-test-{id}-{s}");
    let images = LocalImages(vec![name("amd64"), name("arm64"), name("plain")]);
    let list = name("list");
    let _list_guard = LocalList(list.clone());
    for (tag, file, arch) in [
        (&images.0[0], CONTAINERFILE_AMD64, "amd64"),
        (&images.0[1], CONTAINERFILE_ARM64, "arm64"),
        (&images.0[2], CONTAINERFILE_PLAIN, "amd64"),
    ] {
        let cf = ctx.join(format!("Containerfile.{arch}.{}", tag.len()));
        std::fs::write(&cf, file).unwrap();
        run(tool("podman")
            .args(["build", "-q", "--no-cache", "--arch", arch, "-f"])
            .arg(&cf)
            .args(["-t", tag])
            .arg(&ctx));
    }
    let reg = Registry::start(&storage, Auth::None);
    // `podman VERB... -q --tls-verify=false EXTRA... SRC docker://REGISTRY/DEST`; gives the
    // digest pushed.
    let push = |verb: &[&str], src: &str, dest: &str, extra: &[&str]| -> String {
        let digestfile = root.join(format!("digest-{}", unique()));
        let mut cmd = tool("podman");
        cmd.args(verb)
            .args(["-q", "--tls-verify=false"])
            .args(extra)
            .arg("--digestfile")
            .arg(&digestfile)
            .arg(src)
            .arg(format!("docker://{}/{dest}", reg.addr));
        run(&mut cmd);
        std::fs::read_to_string(&digestfile)
            .unwrap()
            .trim()
            .to_string()
    };
    let amd64 = push(&["push"], &images.0[0], "team/app:amd64", &[]);
    let arm64 = push(&["push"], &images.0[1], "team/app:arm64", &[]);
    let plain = push(
        &["push"],
        &images.0[2],
        "team/plain:v1",
        &["--format", "v2s2"],
    );
    run(tool("podman").args(["manifest", "create", &list]));
    for img in &images.0[..2] {
        run(tool("podman").args([
            "manifest",
            "add",
            &list,
            &format!("containers-storage:{img}"),
        ]));
    }
    let push_list = ["manifest", "push", "--all"];
    let multi = push(&push_list, &list, "team/app:multi", &[]);
    let multi_docker = push(
        &push_list,
        &list,
        "team/app:multi-docker",
        &["--format", "v2s2"],
    );
    for d in [&amd64, &arm64, &plain, &multi, &multi_docker] {
        assert!(d.starts_with("sha256:") && d.len() == 71, "digest {d:?}");
    }
    drop(reg);
    Fixture {
        storage,
        amd64,
        arm64,
        plain,
        multi,
        multi_docker,
    }
}

/// Local podman images removed on drop.
struct LocalImages(Vec<String>);
impl Drop for LocalImages {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .env("CONTAINERS_CONF", CONTAINERS_CONF)
            .args(["rmi", "-f"])
            .args(&self.0)
            .output();
    }
}
struct LocalList(String);
impl Drop for LocalList {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .env("CONTAINERS_CONF", CONTAINERS_CONF)
            .args(["manifest", "rm", &self.0])
            .output();
    }
}

fn client(cache: Option<&Path>, auth_file: Option<&Path>) -> RegistryClient {
    RegistryClient::new(RegistryOptions {
        auth_files: auth_file.into_iter().map(Path::to_path_buf).collect(),
        cache_dir: cache.map(Path::to_path_buf),
        timeout: Duration::from_secs(10),
        ..Default::default()
    })
    .unwrap()
}

fn platform(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

fn amd64_expected(digest: &str) -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/bin/busybox".into(), "sh".into(), "-c".into()],
        cmd: vec!["echo amd64".into()],
        working_dir: Some("/srv/app".into()),
        user: Some("1234:2345".into()),
        env: vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("GREETING".into(), "hello world".into()),
            ("EMPTY".into(), String::new()),
        ],
        digest: digest.into(),
    }
}

/// `CLIENT.config(IMAGE, PLATFORM)` fails with an `ImageError::KIND` (asserted); gives the error.
macro_rules! config_fails {
    ($client:expr, $image:expr, $platform:expr, $kind:ident) => {{
        let err = $client.config(&$image, &platform($platform)).unwrap_err();
        assert!(matches!(err, ImageError::$kind { .. }), "{err}");
        err
    }};
}

fn assert_one_line_with(err: &ImageError, parts: &[&str]) {
    let s = err.to_string();
    assert!(!s.contains('\n'), "not one line: {s}");
    for p in parts {
        assert!(s.contains(p), "{p:?} missing in: {s}");
    }
}

/// Like [`assert_one_line_with`], and the message also names the workflow fields that would
/// make the lookup unnecessary ([`FIELDS`]).
fn assert_one_line_with_fields(err: &ImageError, parts: &[&str]) {
    let mut all = parts.to_vec();
    all.extend_from_slice(FIELDS);
    assert_one_line_with(err, &all);
}

/// The fields a lookup error tells the user to set instead.
const FIELDS: &[&str] = &[
    "run.command",
    "run.args",
    "workingDir",
    "securityContext.runAsUser/runAsGroup",
];

// ---------------------------------------------------------------- tests: open registry

/// The fixture's registry without authentication, and a client with no cache or credentials.
fn open_registry() -> (&'static Fixture, Registry, RegistryClient) {
    let f = fixture();
    (
        f,
        Registry::start(&f.storage, Auth::None),
        client(None, None),
    )
}

#[test]
fn oci_image_by_tag_gives_entrypoint_cmd_workdir_user_env() {
    let (f, reg, c) = open_registry();
    let got = c
        .config(&reg.image("team/app:amd64"), &platform("linux/amd64"))
        .unwrap();
    assert_eq!(got, amd64_expected(&f.amd64));
    // Same result by digest, and the arm64 image has its own values.
    let by_digest = c
        .config(
            &reg.image(&format!("team/app@{}", f.amd64)),
            &platform("linux/amd64"),
        )
        .unwrap();
    assert_eq!(by_digest, amd64_expected(&f.amd64));
    let arm = c
        .config(&reg.image("team/app:arm64"), &platform("linux/arm64"))
        .unwrap();
    assert_eq!(arm.cmd, ["echo arm64"]);
    assert_eq!(arm.working_dir.as_deref(), Some("/srv/arm"));
    assert_eq!(arm.user.as_deref(), Some("4321"));
    assert_eq!(arm.digest, f.arm64);
    // The registry saw our requests (the client did not answer from elsewhere).
    assert!(
        reg.log().contains("GET /v2/team/app/blobs/sha256:"),
        "{}",
        reg.log()
    );
}

#[test]
fn docker_v2_manifest_of_an_image_without_entrypoint_or_cmd() {
    let (f, reg, c) = open_registry();
    let got = c
        .config(&reg.image("team/plain:v1"), &platform("linux/amd64"))
        .unwrap();
    assert!(got.entrypoint.is_empty(), "{got:?}");
    assert!(got.cmd.is_empty(), "{got:?}");
    assert_eq!(got.working_dir, None);
    assert_eq!(got.user, None);
    assert_eq!(got.digest, f.plain);
}

#[test]
fn multi_arch_index_and_manifest_list_select_the_platform() {
    let (f, reg, c) = open_registry();
    for (tag, top) in [("multi", &f.multi), ("multi-docker", &f.multi_docker)] {
        let image = reg.image(&format!("team/app:{tag}"));
        let amd = c.config(&image, &platform("linux/amd64")).unwrap();
        assert_eq!(amd.cmd, ["echo amd64"], "{tag}");
        assert_eq!(amd.user.as_deref(), Some("1234:2345"), "{tag}");
        assert_eq!(
            &amd.digest, top,
            "{tag}: digest of the index, not of one manifest"
        );
        for p in ["linux/arm64", "linux/arm64/v8"] {
            let arm = c.config(&image, &platform(p)).unwrap();
            assert_eq!(arm.cmd, ["echo arm64"], "{tag} {p}");
            assert_eq!(arm.working_dir.as_deref(), Some("/srv/arm"), "{tag} {p}");
        }
        let err = c.config(&image, &platform("linux/s390x")).unwrap_err();
        assert!(
            matches!(err, ImageError::NoMatchingPlatform { .. }),
            "{err}"
        );
        assert_one_line_with(
            &err,
            &[
                &image,
                "no manifest for platform linux/s390x",
                "linux/amd64",
                "linux/arm64",
            ],
        );
    }
    // Pinned to the index digest, platform still selects.
    let pinned = reg.image(&format!("team/app@{}", f.multi));
    assert_eq!(
        c.config(&pinned, &platform("linux/arm64")).unwrap().cmd,
        ["echo arm64"]
    );
}

#[test]
fn unknown_tag_and_repository_are_not_found() {
    let (_, reg, c) = open_registry();
    for image in [reg.image("team/app:nope"), reg.image("team/nothing:v1")] {
        let err = config_fails!(c, image, "linux/amd64", NotFound);
        assert_one_line_with(&err, &[&image, "not found", "404"]);
    }
}

// ---------------------------------------------------------------- tests: cache

#[test]
fn digest_pinned_lookup_is_served_from_cache_with_the_registry_stopped() {
    let f = fixture();
    let cache = tmpdir("cache");
    let reg = Registry::start(&f.storage, Auth::None);
    let addr = reg.addr.clone();
    let pinned = format!("{addr}/team/app@{}", f.multi);
    let tagged = format!("{addr}/team/app:amd64");
    let first = client(Some(&cache), None);
    let want_amd = first.config(&pinned, &platform("linux/amd64")).unwrap();
    assert!(first.network_requests() >= 3, "index, manifest, blob");
    let want_tagged = first.config(&tagged, &platform("linux/amd64")).unwrap();
    assert_eq!(want_tagged, amd64_expected(&f.amd64));

    // A tag costs exactly one HEAD when its digest is cached (plus, once per client, the
    // TLS attempt that finds this loopback registry speaks plain HTTP).
    let head = "\"HEAD /v2/team/app/manifests/amd64 ";
    let gets = "\"GET /v2/team/app/";
    let heads_before = reg.wait_log_count(head, 1);
    let gets_before = reg.wait_log_count(gets, 3);
    let second = client(Some(&cache), None);
    assert_eq!(
        second.config(&tagged, &platform("linux/amd64")).unwrap(),
        want_tagged
    );
    assert_eq!(second.network_requests(), 2, "TLS probe + HEAD");
    assert_eq!(reg.wait_log_count(head, heads_before + 1), heads_before + 1);
    assert_eq!(
        reg.log().matches(gets).count(),
        gets_before,
        "{}",
        reg.log()
    );

    drop(reg); // the registry is gone now
    let offline = client(Some(&cache), None);
    let got = offline.config(&pinned, &platform("linux/amd64")).unwrap();
    assert_eq!(got, want_amd);
    assert_eq!(got.cmd, ["echo amd64"]);
    assert_eq!(got.digest, f.multi);
    assert_eq!(
        offline.network_requests(),
        0,
        "a cache hit makes no network call"
    );
    // The manifest the index led to was cached too.
    let by_manifest = format!("{addr}/team/app@{}", f.amd64);
    assert_eq!(
        offline
            .config(&by_manifest, &platform("linux/amd64"))
            .unwrap(),
        amd64_expected(&f.amd64)
    );
    assert_eq!(offline.network_requests(), 0);

    // The cache key includes the platform: arm64 was never looked up.
    config_fails!(offline, pinned, "linux/arm64", Unreachable);
    // A tag has to be resolved, so it needs the registry: a clear error.
    let err = config_fails!(offline, tagged, "linux/amd64", Unreachable);
    assert_one_line_with_fields(
        &err,
        &[tagged.as_str(), "cannot reach registry", addr.as_str()],
    );
}

// ---------------------------------------------------------------- tests: errors

#[test]
fn unreachable_registry_names_the_image_and_the_fields_to_set() {
    let c = client(None, None);
    let closed = ClosedPort::new();
    let image = format!("127.0.0.1:{}/team/app:v1", closed.port);
    let err = config_fails!(c, image, "linux/amd64", Unreachable);
    assert_one_line_with_fields(
        &err,
        &[
            image.as_str(),
            "cannot reach registry",
            "connection refused",
        ],
    );
}

#[test]
fn bad_references_fail_before_any_network_call() {
    let c = client(None, None);
    for (image, why) in [
        ("", "empty"),
        ("Team/App", "lowercase"),
        ("127.0.0.1:5000/app:bad:tag", "invalid"),
        ("app@sha256:1234", "64 lowercase hex"),
        ("app@sha512:00", "unsupported digest algorithm"),
        ("127.0.0.1:99999/app", "invalid port"),
    ] {
        let err = c.config(image, &platform("linux/amd64")).unwrap_err();
        assert!(
            matches!(err, ImageError::InvalidReference { .. }),
            "{image}: {err}"
        );
        assert_one_line_with(&err, &["invalid image reference", why]);
        assert!(parse_reference(image).is_err());
    }
    assert_eq!(c.network_requests(), 0);
}

/// Serves a copy of the storage in which stored bytes no longer match their digests.
#[test]
fn content_that_does_not_match_its_digest_is_rejected() {
    let f = fixture();
    let storage = tmpdir("corrupt").join("storage");
    run(Command::new("cp").arg("-a").arg(&f.storage).arg(&storage));
    let blob = |d: &str| {
        let hex = &d["sha256:".len()..];
        storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    };
    // Config blob of team/plain: same length, different bytes.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&f.plain)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let cfg = std::fs::read_to_string(blob(&config_digest)).unwrap();
    assert!(cfg.contains("\"linux\""));
    std::fs::write(blob(&config_digest), cfg.replace("\"linux\"", "\"linuz\"")).unwrap();
    // Manifest of team/app:arm64: a byte more (still valid JSON).
    let mut m = std::fs::read(blob(&f.arm64)).unwrap();
    m.push(b'\n');
    std::fs::write(blob(&f.arm64), m).unwrap();

    let reg = Registry::start(&storage, Auth::None);
    let c = client(None, None);
    let image = reg.image("team/plain:v1");
    let err = config_fails!(c, image, "linux/amd64", DigestMismatch);
    assert_one_line_with(
        &err,
        &[
            &image,
            "config blob does not match its digest",
            &config_digest,
        ],
    );

    let image = reg.image("team/app:arm64");
    let err = config_fails!(c, image, "linux/arm64", DigestMismatch);
    assert_one_line_with(
        &err,
        &[&image, "manifest", "does not match its digest", &f.arm64],
    );
    // Reached through the index, the same manifest is rejected as well.
    let image = reg.image("team/app:multi");
    config_fails!(c, image, "linux/arm64", DigestMismatch);
    // The untouched amd64 side still works.
    assert_eq!(
        c.config(&image, &platform("linux/amd64")).unwrap().cmd,
        ["echo amd64"]
    );
}

// ---------------------------------------------------------------- tests: basic auth

fn auth_file(dir: &Path, registry: &str, user: &str, password: &str) -> PathBuf {
    let p = dir.join("auth.json");
    let auth = STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        &p,
        serde_json::json!({ "auths": { registry: { "auth": auth } } }).to_string(),
    )
    .unwrap();
    p
}

/// DIR/htpasswd granting [`USER`] with [`PASSWORD`] (bcrypt, as docker-registry wants).
fn htpasswd_file(dir: &Path) -> PathBuf {
    let p = dir.join("htpasswd");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(&p, format!("{USER}:{hash}\n")).unwrap();
    p
}

#[test]
fn basic_auth_with_htpasswd() {
    let f = fixture();
    let dir = tmpdir("basic");
    let reg = Registry::start(&f.storage, Auth::Htpasswd(htpasswd_file(&dir)));
    let image = reg.image("team/app:amd64");

    let anonymous = client(None, None);
    let err = config_fails!(anonymous, image, "linux/amd64", Unauthorized);
    assert_one_line_with(
        &err,
        &[
            &image,
            "basic authentication required",
            "no credentials for",
            &reg.addr,
        ],
    );

    let wrong = auth_file(&dir, &reg.addr, USER, "wrong");
    let err = config_fails!(
        client(None, Some(&wrong)),
        image,
        "linux/amd64",
        Unauthorized
    );
    assert_one_line_with(
        &err,
        &[&image, "401", "basic credentials of user \"stepctl\""],
    );

    let right = auth_file(&dir, &reg.addr, USER, PASSWORD);
    let c = client(None, Some(&right));
    assert_eq!(
        c.config(&image, &platform("linux/amd64")).unwrap(),
        amd64_expected(&f.amd64)
    );
    // Multi-arch through basic auth, reusing the accepted credentials.
    let multi = c
        .config(&reg.image("team/app:multi"), &platform("linux/arm64"))
        .unwrap();
    assert_eq!(multi.cmd, ["echo arm64"]);
}

// ---------------------------------------------------------------- tests: bearer tokens

/// A token service in the style registries use: `GET /token?service=…&scope=…` with basic
/// credentials, answering `{"token": JWT}` signed (RS256, `x5c` header) with `openssl`.
struct TokenServer {
    addr: String,
    stop: Arc<AtomicBool>,
    /// Request lines and whether basic credentials were valid, in order.
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Signer {
    key: PathBuf,
    cert_der_b64: String,
}

fn make_signer(dir: &Path, name: &str) -> (Signer, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    run(tool("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN=stepctl-test-{name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(der.status.success());
    (
        Signer {
            key,
            cert_der_b64: STANDARD.encode(der.stdout),
        },
        cert,
    )
}

const SERVICE: &str = "stepctl-test-registry";
const ISSUER: &str = "stepctl-test-issuer";

impl TokenServer {
    fn start(signer: Signer, require_credentials: bool) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                serve_token(conn, &signer, require_credentials, &seen2);
            }
        });
        TokenServer {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token(
    conn: TcpStream,
    signer: &Signer,
    require_credentials: bool,
    seen: &Mutex<Vec<(String, bool)>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let authenticated = authorization.as_deref() == Some(expected.as_str());
    seen.lock()
        .unwrap()
        .push((request_line.trim().to_string(), authenticated));
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    };
    let mut conn = conn;
    if !authenticated && (require_credentials || authorization.is_some()) {
        let _ = conn.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{\"details\":\"unauthorized\"}\n",
        );
        return;
    }
    if param("service").as_deref() != Some(SERVICE) {
        let _ = conn.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    // scope = repository:NAME:ACTIONS; grant pull only.
    let access: Vec<serde_json::Value> = param("scope")
        .into_iter()
        .filter_map(|s| {
            let mut parts = s.splitn(2, ':');
            let kind = parts.next()?.to_string();
            let rest = parts.next()?;
            let (name, actions) = rest.rsplit_once(':')?;
            let granted: Vec<&str> = actions.split(',').filter(|a| *a == "pull").collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": granted}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [signer.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": if authenticated { USER } else { "" }, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": unique(), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&signer.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let sig = openssl.wait_with_output().unwrap();
    assert!(sig.status.success(), "openssl dgst -sign failed");
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.stdout));
    let body = serde_json::json!({"token": jwt, "expires_in": 300}).to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn token_registry(
    f: &Fixture,
    signer: Signer,
    trusted_cert: &Path,
    require_credentials: bool,
) -> (TokenServer, Registry) {
    let server = TokenServer::start(signer, require_credentials);
    let reg = Registry::start(
        &f.storage,
        Auth::Token {
            realm: server.realm(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            root_cert: trusted_cert.to_path_buf(),
        },
    );
    (server, reg)
}

/// A registry trusting a token service that signs with a trusted key (in a new directory `tag`);
/// the service asks for credentials if `require_credentials`.
fn trusted_token_registry(
    tag: &str,
    require_credentials: bool,
) -> (&'static Fixture, PathBuf, TokenServer, Registry) {
    let f = fixture();
    let dir = tmpdir(tag);
    let (signer, cert) = make_signer(&dir, "token");
    let (server, reg) = token_registry(f, signer, &cert, require_credentials);
    (f, dir, server, reg)
}

#[test]
fn bearer_token_flow_with_credentials() {
    let (f, dir, server, reg) = trusted_token_registry("bearer", true);
    let image = reg.image("team/app:multi");

    // No credentials: the token service refuses an anonymous token.
    let err = config_fails!(client(None, None), image, "linux/amd64", Unauthorized);
    assert_one_line_with(
        &err,
        &[
            &image,
            "token service",
            "refused an anonymous request",
            "repository:team/app:pull",
        ],
    );

    let creds = auth_file(&dir, &reg.addr, USER, PASSWORD);
    let c = client(None, Some(&creds));
    let got = c.config(&image, &platform("linux/arm64")).unwrap();
    assert_eq!(got.cmd, ["echo arm64"]);
    assert_eq!(got.digest, f.multi);
    let seen = server.seen.lock().unwrap().clone();
    let ours: Vec<_> = seen.iter().filter(|(_, ok)| *ok).collect();
    assert_eq!(
        ours.len(),
        1,
        "one token for the repository, reused for manifests and blob: {seen:?}"
    );
    assert!(
        ours[0].0.contains("service=stepctl-test-registry")
            && ours[0].0.contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{seen:?}"
    );
    // The registry itself checked the token (signature, issuer, audience, access).
    assert!(reg.log().contains("authorized request"), "{}", reg.log());
}

#[test]
fn bearer_token_flow_anonymous() {
    let (f, _dir, server, reg) = trusted_token_registry("bearer-anon", false);
    let c = client(None, None);
    let got = c
        .config(&reg.image("team/app:amd64"), &platform("linux/amd64"))
        .unwrap();
    assert_eq!(got, amd64_expected(&f.amd64));
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen[0].1, "anonymous token request: {seen:?}");
}

#[test]
fn bearer_token_signed_by_an_untrusted_key_is_refused_by_the_registry() {
    let f = fixture();
    let dir = tmpdir("bearer-untrusted");
    let (_trusted_signer, trusted_cert) = make_signer(&dir, "trusted");
    let (rogue, _) = make_signer(&dir, "rogue");
    let (_server, reg) = token_registry(f, rogue, &trusted_cert, false);
    let image = reg.image("team/app:amd64");
    let err = config_fails!(client(None, None), image, "linux/amd64", Unauthorized);
    assert_one_line_with_fields(
        &err,
        &[image.as_str(), "401 Unauthorized with an anonymous token"],
    );
}

// ---------------------------------------------------------------- tests: TLS

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_key, ca) = (dir.join("ca.key"), dir.join("ca.pem"));
    let (key, csr, cert) = (
        dir.join("tls.key"),
        dir.join("tls.csr"),
        dir.join("tls.pem"),
    );
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run(tool("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=stepctl-test-ca", "-keyout"])
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(tool("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(tool("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (ca, cert, key)
}

#[test]
fn https_registry_with_a_private_ca() {
    let f = fixture();
    let dir = tmpdir("tls");
    let (ca, cert, key) = make_tls(&dir);
    let reg = Registry::start_tls(&f.storage, Auth::None, Some((&cert, &key)));
    let image = reg.image("team/app:multi");

    // The registry speaks only HTTPS: success means TLS verified against the given CA.
    let c = RegistryClient::new(RegistryOptions {
        ca_files: vec![ca.clone()],
        ..Default::default()
    })
    .unwrap();
    let got = c.config(&image, &platform("linux/arm64")).unwrap();
    assert_eq!(got.cmd, ["echo arm64"]);
    assert_eq!(got.digest, f.multi);

    // Without the CA the certificate is refused, and that is not "fall back to plain HTTP".
    let requests_before = reg.wait_log_count("\"GET /v2/", 3);
    let untrusting = client(None, None);
    let err = config_fails!(untrusting, image, "linux/amd64", Unreachable);
    assert_one_line_with_fields(
        &err,
        &[
            image.as_str(),
            "cannot reach registry",
            "TLS",
            "certificate",
        ],
    );
    assert_eq!(untrusting.network_requests(), 1, "no plain HTTP retry");
    std::thread::sleep(Duration::from_millis(100));
    let log = reg.log();
    assert_eq!(log.matches("\"GET /v2/").count(), requests_before, "{log}");

    // A CA file without certificates is a configuration error, named.
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = RegistryClient::new(RegistryOptions {
        ca_files: vec![empty],
        ..Default::default()
    })
    .err()
    .expect("a CA file without certificates must be refused");
    assert_one_line_with(&err, &["empty.pem", "no PEM certificate"]);
}

// ---------------------------------------------------------------- tests: podman

#[test]
fn podman_inspect_reads_the_local_image() {
    let dir = tmpdir("podman");
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(dir.join("Containerfile"), CONTAINERFILE_AMD64).unwrap();
    let tag = format!("localhost/stepctl-registry-test-{}-inspect:dev", unique());
    let _guard = LocalImages(vec![tag.clone()]);
    run(tool("podman").args(["build", "-q", "-t", &tag]).arg(&dir));
    let got = inspect_podman(&tag).unwrap();
    let expected = amd64_expected(&got.digest);
    assert_eq!(got, expected);
    assert!(
        got.digest.starts_with("sha256:") && got.digest.len() == 71,
        "{}",
        got.digest
    );

    let missing = format!("localhost/stepctl-registry-test-{}-missing:dev", unique());
    let err = inspect_podman(&missing).unwrap_err();
    assert!(matches!(err, ImageError::NotLocal { .. }), "{err}");
    assert_one_line_with_fields(
        &err,
        &[
            missing.as_str(),
            "not in podman's local storage",
            "podman pull",
        ],
    );

    let err = inspect_podman("--help").unwrap_err();
    assert!(matches!(err, ImageError::InvalidReference { .. }), "{err}");
}

#[test]
fn podman_pull_then_inspect() {
    let f = fixture();
    let reg = Registry::start(&f.storage, Auth::None);
    let image = reg.image("team/app:amd64");
    let _guard = LocalImages(vec![image.clone()]);
    let err = inspect_podman(&image).unwrap_err();
    assert!(matches!(err, ImageError::NotLocal { .. }), "{err}");
    let got = pull_and_inspect_podman(&image).unwrap();
    assert_eq!(got, amd64_expected(&f.amd64));
    // Now local: inspect alone works, without the registry.
    drop(reg);
    assert_eq!(inspect_podman(&image).unwrap(), amd64_expected(&f.amd64));

    let closed = ClosedPort::new();
    let missing = format!("127.0.0.1:{}/team/app:v1", closed.port);
    let err = pull_and_inspect_podman(&missing).unwrap_err();
    assert!(matches!(err, ImageError::Podman { .. }), "{err}");
    assert_one_line_with_fields(
        &err,
        &[missing.as_str(), "podman pull failed", "connection refused"],
    );
}

// ---------------------------------------------------------------- tests: through the CLI

/// Writes DIR/wf.yaml: a workflow of one step that runs `image` with no command (so stepctl
/// must look the image up); returns its path.
fn image_workflow(dir: &Path, image: &str) -> PathBuf {
    let p = dir.join("wf.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: testworkflows.testkube.io/v1\nkind: TestWorkflow\nmetadata:\n  name: image-meta\nspec:\n  steps:\n  - name: from-image\n    run:\n      image: {image}\n"
        ),
    )
    .unwrap();
    p
}

/// `stepctl build --images registry WORKFLOW` caching in `cache`; callers add the env of the
/// case (credentials, CA files).
fn stepctl_build_cmd(workflow: &Path, cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stepctl"));
    c.args(["build", "--images", "registry"])
        .arg(workflow)
        .env("STEPCTL_IMAGE_CACHE", cache)
        .stdin(Stdio::null());
    c
}

/// `stepctl build` with an auth file that does not exist (no credentials).
fn stepctl_build(workflow: &Path, cache: &Path) -> std::process::Output {
    stepctl_build_cmd(workflow, cache)
        .env("STEPCTL_REGISTRY_AUTH_FILE", cache.join("no-auth.json"))
        .output()
        .expect("run stepctl")
}

#[test]
fn stepctl_build_takes_command_and_user_from_the_registry() {
    let f = fixture();
    let dir = tmpdir("cli");
    let reg = Registry::start(&f.storage, Auth::None);
    let workflow = image_workflow(&dir, &reg.image("team/app:multi"));
    let out = stepctl_build(&workflow, &dir.join("cache"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let host_cmd = if Platform::host().architecture == "arm64" {
        "echo arm64"
    } else {
        "echo amd64"
    };
    assert!(stdout.contains(host_cmd), "{stdout}");
    assert!(stdout.contains("/bin/busybox"), "{stdout}");
    // USER 1234:2345 (amd64) / 4321 (arm64) becomes the container's user.
    let host_user = if Platform::host().architecture == "arm64" {
        "\"runAsUser\":4321"
    } else {
        "\"runAsUser\":1234,\"runAsGroup\":2345"
    };
    assert!(stdout.contains(host_user), "{stdout}");

    let closed = ClosedPort::new();
    image_workflow(&dir, &format!("127.0.0.1:{}/team/app:multi", closed.port));
    let out = stepctl_build(&workflow, &dir.join("cache"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in [
        "spec.steps[0]",
        "cannot reach registry",
        "run.command",
        "workingDir",
    ] {
        assert!(stderr.contains(part), "{part:?} missing: {stderr}");
    }
}

#[test]
fn stepctl_build_reads_credentials_and_caches_per_environment() {
    let f = fixture();
    let dir = tmpdir("cli-auth");
    let reg = Registry::start(&f.storage, Auth::Htpasswd(htpasswd_file(&dir)));
    let workflow = image_workflow(&dir, &reg.image(&format!("team/app@{}", f.amd64)));
    let cache = dir.join("cache");
    let build = |auth: &Path| {
        stepctl_build_cmd(&workflow, &cache)
            .env("REGISTRY_AUTH_FILE", auth)
            .env_remove("STEPCTL_REGISTRY_AUTH_FILE")
            .output()
            .expect("run stepctl")
    };
    // No credentials: refused, the message says where credentials go.
    let out = build(&dir.join("missing.json"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("basic authentication required") && stderr.contains("auth file"),
        "{stderr}"
    );
    // Credentials from $REGISTRY_AUTH_FILE, result cached in $STEPCTL_IMAGE_CACHE.
    let auth = auth_file(&dir, &reg.addr, USER, PASSWORD);
    let out = build(&auth);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo amd64"));
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let hex = &f.amd64["sha256:".len()..];
    assert!(
        entries
            .iter()
            .any(|e| e.starts_with(&format!("sha256-{hex}."))),
        "{entries:?}"
    );
    // Pinned and cached: works without credentials and without the registry.
    drop(reg);
    let out = build(&dir.join("missing.json"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo amd64"));
}

#[test]
fn stepctl_build_trusts_ca_files_from_the_environment() {
    let f = fixture();
    let dir = tmpdir("cli-tls");
    let (ca, cert, key) = make_tls(&dir);
    let reg = Registry::start_tls(&f.storage, Auth::None, Some((&cert, &key)));
    let workflow = image_workflow(&dir, &reg.image("team/app:amd64"));
    let build = |ca_files: Option<&Path>| {
        let mut cmd = stepctl_build_cmd(&workflow, &dir.join("cache"));
        cmd.env("STEPCTL_REGISTRY_AUTH_FILE", dir.join("none.json"))
            .env_remove("STEPCTL_REGISTRY_CA_FILES");
        if let Some(p) = ca_files {
            // `:`-separated, the trusted CA always last.
            let list = std::env::join_paths([p.to_path_buf(), ca.clone()]).unwrap();
            cmd.env("STEPCTL_REGISTRY_CA_FILES", list);
        }
        cmd.output().expect("run stepctl")
    };
    let out = build(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    let out = build(Some(&ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo amd64"));
    // A CA file that does not exist is named.
    let out = build(Some(&dir.join("nope.pem")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope.pem"), "{stderr}");
}
