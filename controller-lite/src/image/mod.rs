//! Image metadata: the ENTRYPOINT, CMD, WORKDIR, USER and ENV of a container image.
//!
//! A step that sets no command, working directory or user runs with what its image declares,
//! and stepctl has to know those values to rewrite the container's command to the shared init.
//! Two sources:
//!
//! - **podman** ([`inspect_podman`], [`pull_and_inspect_podman`]): `podman image inspect`
//!   of an image in the local storage. Used by `--engine podman`.
//! - **a registry** ([`RegistryClient::config`]): the OCI distribution API v2, for
//!   `--engine kubernetes` where the image is never on this machine. The client
//!   1. resolves the reference: a digest-pinned reference (`repo@sha256:…`) is looked up in
//!      the on-disk cache first and needs no network at all when present; a tag is resolved
//!      with a manifest `HEAD` (its `Docker-Content-Digest`), and only on a cache miss
//!      fetched with `GET`;
//!   2. accepts OCI image indexes and manifests and Docker v2 manifest lists and manifests,
//!      picks the requested [`Platform`] from an index (os, architecture, then variant),
//!   3. fetches the config blob and parses `config.{Entrypoint,Cmd,WorkingDir,User,Env}`;
//!   4. verifies every manifest and the config blob against their sha256 digest — a registry
//!      or proxy serving other bytes is an error, not a silently different command;
//!   5. authenticates like `docker`/`podman` do: anonymous first; on `401` with
//!      `WWW-Authenticate: Basic` it retries with the credentials of the auth file; on
//!      `Bearer realm=…,service=…,scope=…` it fetches a token from the realm (sending the basic
//!      credentials if it has some, anonymously otherwise) and retries with
//!      `Authorization: Bearer`. Tokens are reused for the repository within one client.
//!   6. caches the result per manifest digest and platform under
//!      `$XDG_CACHE_HOME/stepctl/images/` (or `~/.cache/stepctl/images/`), one small JSON
//!      file per key, written atomically.
//!
//! Configuration ([`RegistryOptions::from_env`]):
//! - credentials: docker-style auth files (`{"auths": {"HOST": {"auth": base64(user:pass)}}}`
//!   or `username`/`password` fields; keys may be `HOST`, `HOST/namespace` or a URL), read
//!   from `$STEPCTL_REGISTRY_AUTH_FILE`, else `$REGISTRY_AUTH_FILE`, else
//!   `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json` and
//!   `~/.docker/config.json` (first file with an entry for the host wins). Credential helpers
//!   (`credsStore`, `credHelpers`) and identity tokens are not supported.
//! - HTTPS, verified against the system CA bundle (`$SSL_CERT_FILE`, else the usual
//!   distribution paths; the bundled Mozilla roots when there is none) plus the PEM files in
//!   `$STEPCTL_REGISTRY_CA_FILES` (`:`-separated), for registries with a private CA.
//! - plain HTTP: only for loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) and hosts
//!   listed in `$STEPCTL_INSECURE_REGISTRIES` (comma separated `host[:port]`), and like docker
//!   only after HTTPS found the server not speaking TLS at all (a TLS server with an untrusted
//!   certificate stays an error). The choice is remembered per client.
//! - cache: `$STEPCTL_IMAGE_CACHE` overrides the directory.
//!
//! Why `ureq` (with rustls, without gzip): the controller is synchronous and makes a handful
//! of requests per workflow; an async stack (tokio + hyper + reqwest) would add a runtime
//! and several times the compile time on a 2-core CI machine for no gain. `ureq` is blocking,
//! small, and with rustls needs no system OpenSSL, so the binary stays self-contained.
//! `sha2` verifies digests; `base64` encodes basic credentials and decodes auth files;
//! `rustls` (already under `ureq`, no extra code) is named only to tell a plain-HTTP answer
//! to a TLS handshake from a certificate error.
//!
//! Every error is one line ([`ImageError`]'s `Display`). When the metadata can't be had (the
//! registry can't be reached, refuses access, or the image is not local), the message names
//! the image and the workflow fields that make the lookup unnecessary: `run.command`,
//! `run.args`, `workingDir`, `securityContext.runAsUser`/`runAsGroup`.

mod auth;
mod cache;
mod podman;
mod reference;
mod registry;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use podman::{inspect_podman, pull_and_inspect_podman};
pub use reference::{parse_reference, Reference};
pub use registry::{RegistryClient, RegistryOptions};

/// The workflow fields that make image metadata unnecessary, as named in error messages.
pub const FIELDS_INSTEAD: &str = "set run.command (for ENTRYPOINT), run.args (for CMD), \
workingDir (for WORKDIR) and securityContext.runAsUser/runAsGroup (for USER) on the step \
so stepctl does not need the image's metadata";

/// What an image declares for the process it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    /// `ENTRYPOINT`, empty when unset.
    pub entrypoint: Vec<String>,
    /// `CMD`, empty when unset.
    pub cmd: Vec<String>,
    /// `WORKDIR`, `None` when unset or empty.
    pub working_dir: Option<String>,
    /// `USER` as written in the image (`name`, `uid`, `uid:gid`, `name:group`); `None` when
    /// unset or empty.
    pub user: Option<String>,
    /// `ENV`, in image order; an entry without `=` has an empty value.
    pub env: Vec<(String, String)>,
    /// The digest (`sha256:<hex>`) the reference resolved to: for a registry the digest of the
    /// top-level manifest (an index for multi-platform images), so `repo@digest` pins exactly
    /// what was inspected; for podman the image's manifest digest (podman's `Digest`).
    pub digest: String,
}

/// An image platform, as in OCI image indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux` and this machine's architecture in OCI/Go naming (`amd64`, `arm64`, …).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => {
                if cfg!(target_endian = "little") {
                    ("ppc64le", None)
                } else {
                    ("ppc64", None)
                }
            }
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/arm64` or `linux/arm/v7`.
    pub fn parse(s: &str) -> Result<Platform, ImageError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || ImageError::InvalidPlatform {
            input: s.to_string(),
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        if parts
            .iter()
            .any(|p| !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Why image metadata could not be had. `Display` is one line meant for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The image reference does not parse.
    InvalidReference { input: String, reason: String },
    /// A platform string does not parse.
    InvalidPlatform { input: String },
    /// The registry could not be reached (DNS, connect, TLS, timeout).
    Unreachable {
        image: String,
        registry: String,
        detail: String,
    },
    /// The registry refused access with the credentials available.
    Unauthorized {
        image: String,
        registry: String,
        detail: String,
    },
    /// The registry has no such repository, tag or digest.
    NotFound { image: String, detail: String },
    /// An index has no manifest for the requested platform.
    NoMatchingPlatform {
        image: String,
        platform: String,
        available: Vec<String>,
    },
    /// Content did not hash to the digest it was requested or announced by.
    DigestMismatch {
        image: String,
        what: String,
        expected: String,
        actual: String,
    },
    /// The registry answered something this client does not understand.
    Registry { image: String, detail: String },
    /// `podman` could not be run or failed; `detail` says which command.
    Podman { image: String, detail: String },
    /// The client's configuration (auth file, CA file) is unusable.
    Config { detail: String },
    /// The image is not in podman's local storage.
    NotLocal { image: String },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::InvalidReference { input, reason } => {
                write!(f, "invalid image reference {input:?}: {reason}")
            }
            ImageError::InvalidPlatform { input } => write!(
                f,
                "invalid platform {input:?}: expected os/architecture[/variant], e.g. linux/arm64"
            ),
            ImageError::Unreachable {
                image,
                registry,
                detail,
            } => write!(
                f,
                "image {image}: cannot reach registry {registry} ({detail}); {FIELDS_INSTEAD}"
            ),
            ImageError::Unauthorized {
                image,
                registry,
                detail,
            } => write!(
                f,
                "image {image}: registry {registry} refused access ({detail}); add credentials \
                 for {registry} to the auth file (REGISTRY_AUTH_FILE) or {FIELDS_INSTEAD}"
            ),
            ImageError::NotFound { image, detail } => {
                write!(f, "image {image}: not found in its registry ({detail})")
            }
            ImageError::NoMatchingPlatform {
                image,
                platform,
                available,
            } => write!(
                f,
                "image {image}: no manifest for platform {platform} (available: {})",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            ImageError::DigestMismatch {
                image,
                what,
                expected,
                actual,
            } => write!(
                f,
                "image {image}: {what} does not match its digest (expected {expected}, got {actual})"
            ),
            ImageError::Registry { image, detail } => {
                write!(f, "image {image}: registry error: {detail}; {FIELDS_INSTEAD}")
            }
            ImageError::Podman { image, detail } => write!(f, "image {image}: {detail}"),
            ImageError::Config { detail } => write!(f, "image registry configuration: {detail}"),
            ImageError::NotLocal { image } => write!(
                f,
                "image {image} is not in podman's local storage: pull it with `podman pull {image}` \
                 or {FIELDS_INSTEAD}"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// Parses the `ENV` list of an image config (`KEY=value`).
pub(crate) fn parse_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

/// The `config` object of an OCI/Docker image config blob, and podman's inspect `Config`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
}

impl RawConfig {
    pub(crate) fn into_image_config(self, digest: String) -> ImageConfig {
        ImageConfig {
            entrypoint: self.entrypoint.unwrap_or_default(),
            cmd: self.cmd.unwrap_or_default(),
            working_dir: self.working_dir.filter(|s| !s.is_empty()),
            user: self.user.filter(|s| !s.is_empty()),
            env: parse_env(&self.env.unwrap_or_default()),
            digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_and_display() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.architecture, "arm");
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(Platform::parse("linux/amd64").unwrap().variant, None);
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            let e = Platform::parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid platform"), "{bad}: {e}");
        }
    }

    #[test]
    fn host_platform_is_linux_go_naming() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        assert_ne!(p.architecture, "x86_64");
        assert_ne!(p.architecture, "aarch64");
    }

    #[test]
    fn env_and_empty_fields() {
        let raw: RawConfig = serde_json::from_str(
            r#"{"Entrypoint":null,"Cmd":["sh"],"WorkingDir":"","User":"","Env":["A=1","B=x=y","C"]}"#,
        )
        .unwrap();
        let c = raw.into_image_config("sha256:00".into());
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, ["sh"]);
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user, None);
        assert_eq!(
            c.env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
                ("C".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn errors_are_one_line_and_name_the_fields() {
        let e = ImageError::Unreachable {
            image: "127.0.0.1:1/a:b".into(),
            registry: "127.0.0.1:1".into(),
            detail: "connection refused".into(),
        }
        .to_string();
        assert!(!e.contains('\n'));
        for field in [
            "127.0.0.1:1/a:b",
            "run.command",
            "run.args",
            "workingDir",
            "securityContext.runAsUser",
            "runAsGroup",
        ] {
            assert!(e.contains(field), "{field} missing in {e}");
        }
    }
}
