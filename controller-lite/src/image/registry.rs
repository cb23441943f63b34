//! A small client of the OCI distribution API v2: manifests, config blobs, auth, cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use ureq::http::Response;
use ureq::Body;

use super::auth::{parse_challenge, Challenge, CredentialStore};
use super::cache::Cache;
use super::reference::{host_without_port, is_loopback, parse_reference, Reference};
use super::{ImageConfig, ImageError, Platform, RawConfig};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 1 (`…manifest.v1+json`, `…manifest.v1+prettyjws`): unsupported.
const DOCKER_SCHEMA1_PREFIX: &str = "application/vnd.docker.distribution.manifest.v1";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

const MAX_MANIFEST: u64 = 4 << 20;
const MAX_CONFIG: u64 = 16 << 20;
const MAX_SMALL: u64 = 1 << 20;

/// How a [`RegistryClient`] finds credentials, caches, and which hosts speak plain HTTP.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Extra PEM files of CA certificates trusted for HTTPS, on top of the system's bundle.
    pub ca_files: Vec<PathBuf>,
    /// Docker-style auth files, in lookup order; missing ones are skipped.
    pub auth_files: Vec<PathBuf>,
    /// Directory of the config cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Hosts (`host` or `host:port`) that may be reached over plain HTTP, besides loopback
    /// ones. Like docker, HTTPS is tried first and plain HTTP is used when the host does not
    /// speak TLS at all; a TLS host with a bad certificate stays an error.
    pub insecure_hosts: Vec<String>,
    /// Timeout of each HTTP request (connect, send, receive).
    pub timeout: Duration,
}

impl Default for RegistryOptions {
    /// No auth files, no cache, no extra CAs or insecure hosts, 30 s timeout.
    fn default() -> Self {
        RegistryOptions {
            ca_files: Vec::new(),
            auth_files: Vec::new(),
            cache_dir: None,
            insecure_hosts: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// System CA bundles, first existing wins (Debian/Ubuntu, Fedora/RHEL, Alpine/others).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The trust roots: `$SSL_CERT_FILE` or the system bundle, plus `extra`; the bundled
/// Mozilla roots when neither exists.
fn root_certs(extra: &[PathBuf]) -> Result<ureq::tls::RootCerts, String> {
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    let mut certs = Vec::new();
    for (path, required) in system
        .iter()
        .map(|p| (p, false))
        .chain(extra.iter().map(|p| (p, true)))
    {
        let pem = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if !required => {
                let _ = e;
                continue;
            }
            Err(e) => return Err(format!("cannot read CA file {}: {e}", path.display())),
        };
        let before = certs.len();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                certs.push(c);
            }
        }
        if required && certs.len() == before {
            return Err(format!(
                "CA file {} contains no PEM certificate",
                path.display()
            ));
        }
    }
    Ok(if certs.is_empty() {
        ureq::tls::RootCerts::WebPki
    } else {
        ureq::tls::RootCerts::new_with_certs(&certs)
    })
}

impl RegistryOptions {
    /// Options from the environment, see the [module docs](super).
    pub fn from_env() -> RegistryOptions {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let auth_files = if let Some(f) = env("STEPCTL_REGISTRY_AUTH_FILE") {
            vec![f]
        } else if let Some(f) = env("REGISTRY_AUTH_FILE") {
            vec![f]
        } else {
            let mut v = Vec::new();
            if let Some(d) = env("XDG_RUNTIME_DIR") {
                v.push(d.join("containers/auth.json"));
            } else {
                use std::os::unix::fs::MetadataExt;
                if let Ok(m) = std::fs::metadata("/proc/self") {
                    v.push(PathBuf::from(format!(
                        "/run/containers/{}/auth.json",
                        m.uid()
                    )));
                }
            }
            if let Some(d) = env("DOCKER_CONFIG") {
                v.push(d.join("config.json"));
            } else if let Some(h) = env("HOME") {
                v.push(h.join(".docker/config.json"));
            }
            v
        };
        let cache_dir = env("STEPCTL_IMAGE_CACHE").or_else(|| {
            env("XDG_CACHE_HOME")
                .or_else(|| env("HOME").map(|h| h.join(".cache")))
                .map(|c| c.join("stepctl/images"))
        });
        let insecure_hosts = std::env::var("STEPCTL_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let ca_files = std::env::var_os("STEPCTL_REGISTRY_CA_FILES")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        RegistryOptions {
            ca_files,
            auth_files,
            cache_dir,
            insecure_hosts,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Reads image configs from registries. Cheap to share between threads (`Sync`).
pub struct RegistryClient {
    agent: ureq::Agent,
    creds: CredentialStore,
    cache: Option<Cache>,
    insecure: Vec<String>,
    /// `Authorization` values that worked, per (API host, repository).
    auth: Mutex<HashMap<(String, String), String>>,
    /// Insecure hosts found not to speak TLS: reached over plain HTTP from then on.
    plain_http: Mutex<std::collections::HashSet<String>>,
    requests: AtomicU64,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<DescriptorPlatform>,
}

#[derive(Deserialize, Clone)]
struct DescriptorPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl DescriptorPlatform {
    fn display(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<RawConfig>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// The lookup being served: the reference as the user wrote it, and parsed.
struct Lookup<'a> {
    image: &'a str,
    r: Reference,
}

impl<'a> Lookup<'a> {
    fn unreachable(&self, detail: impl Into<String>) -> ImageError {
        ImageError::Unreachable {
            image: self.image.to_string(),
            registry: self.r.registry.clone(),
            detail: detail.into(),
        }
    }
    fn unauthorized(&self, detail: impl Into<String>) -> ImageError {
        ImageError::Unauthorized {
            image: self.image.to_string(),
            registry: self.r.registry.clone(),
            detail: detail.into(),
        }
    }
    fn registry(&self, detail: impl Into<String>) -> ImageError {
        ImageError::Registry {
            image: self.image.to_string(),
            detail: detail.into(),
        }
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `host[:port]` of an `http(s)://` URL, or `None`.
fn url_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then_some((scheme, host))
}

impl RegistryClient {
    /// A client with explicit options. Fails when an auth file exists but can't be read.
    pub fn new(options: RegistryOptions) -> Result<RegistryClient, ImageError> {
        let creds = CredentialStore::load(&options.auth_files)
            .map_err(|detail| ImageError::Config { detail })?;
        let roots =
            root_certs(&options.ca_files).map_err(|detail| ImageError::Config { detail })?;
        let config = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .http_status_as_error(false)
            .timeout_global(Some(options.timeout))
            .timeout_connect(Some(options.timeout.min(Duration::from_secs(10))))
            .max_redirects(5)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("stepctl/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(RegistryClient {
            agent: config.into(),
            creds,
            cache: options.cache_dir.map(Cache::new),
            insecure: options
                .insecure_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            auth: Mutex::new(HashMap::new()),
            plain_http: Mutex::new(Default::default()),
            requests: AtomicU64::new(0),
        })
    }

    /// A client configured from the environment ([`RegistryOptions::from_env`]).
    pub fn from_env() -> Result<RegistryClient, ImageError> {
        RegistryClient::new(RegistryOptions::from_env())
    }

    /// The cache directory, if caching is on.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_ref().map(|c| c.dir())
    }

    /// HTTP requests this client has sent (registry and token endpoints), for diagnostics
    /// and tests.
    pub fn network_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether `hostport` may be reached over plain HTTP (after HTTPS found no TLS there):
    /// loopback, or listed as insecure.
    pub fn is_insecure(&self, hostport: &str) -> bool {
        if is_loopback(hostport) {
            return true;
        }
        let hostport = hostport.to_ascii_lowercase();
        let host = host_without_port(&hostport);
        self.insecure.iter().any(|h| *h == hostport || h == host)
    }

    /// The config of `image_ref` for `platform`. A digest-pinned reference whose config is
    /// cached makes no network request; a tag costs one manifest `HEAD` when cached.
    /// `platform` selects from an index; a single-platform image's config is returned
    /// whatever platform was asked (the pod would fail to start, not the metadata lookup).
    pub fn config(&self, image_ref: &str, platform: &Platform) -> Result<ImageConfig, ImageError> {
        let r = parse_reference(image_ref)?;
        let l = Lookup {
            image: image_ref,
            r,
        };
        if let Some(d) = l.r.digest.clone() {
            if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&d, platform)) {
                return Ok(hit);
            }
            let (bytes, content_type) = self.get_manifest(&l, &d)?;
            return self.resolve(&l, d, &bytes, content_type, platform);
        }
        let tag = l.r.reference().to_string();
        let announced = self.head_manifest(&l, &tag)?;
        if let Some(d) = &announced {
            if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(d, platform)) {
                return Ok(hit);
            }
            // Fetch by digest, so what we read is what the tag pointed at when asked.
            let (bytes, content_type) = self.get_manifest(&l, d)?;
            return self.resolve(&l, d.clone(), &bytes, content_type, platform);
        }
        let (bytes, content_type) = self.get_manifest(&l, &tag)?;
        let digest = sha256_digest(&bytes);
        self.resolve(&l, digest, &bytes, content_type, platform)
    }

    /// From a top-level manifest (index or image manifest) to the config.
    fn resolve(
        &self,
        l: &Lookup,
        top_digest: String,
        bytes: &[u8],
        content_type: Option<String>,
        platform: &Platform,
    ) -> Result<ImageConfig, ImageError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| l.registry(format!("manifest is not valid JSON: {e}")))?;
        // The body's mediaType decides; the Content-Type only when it names a manifest type
        // (some servers send `application/json` or nothing useful).
        let known = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
        let media = m
            .media_type
            .clone()
            .or(content_type.filter(|c| known.contains(&c.as_str())))
            .unwrap_or_default();
        if m.schema_version == Some(1) || media.starts_with(DOCKER_SCHEMA1_PREFIX) {
            return Err(l.registry(
                "Docker schema 1 manifests are not supported (push the image with a current tool)",
            ));
        }
        let is_index = m.manifests.is_some() || media == OCI_INDEX || media == DOCKER_LIST;
        if !is_index {
            if !media.is_empty() && media != OCI_MANIFEST && media != DOCKER_MANIFEST {
                return Err(l.registry(format!(
                    "unsupported manifest media type {media} (not an image)"
                )));
            }
            let config = self.config_from_manifest(l, &m, top_digest)?;
            if let Some(c) = &self.cache {
                c.put(platform, &config);
            }
            return Ok(config);
        }
        let child =
            select_platform(m.manifests.as_deref().unwrap_or(&[]), platform).ok_or_else(|| {
                ImageError::NoMatchingPlatform {
                    image: l.image.to_string(),
                    platform: platform.to_string(),
                    available: m
                        .manifests
                        .iter()
                        .flatten()
                        .filter_map(|d| d.platform.as_ref())
                        .filter(|p| p.os != "unknown")
                        .map(|p| p.display())
                        .collect(),
                }
            })?;
        if !is_sha256(&child.digest) {
            return Err(l.registry(format!(
                "index entry has an unsupported digest {:?}",
                child.digest
            )));
        }
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&child.digest, platform));
        let mut config = match cached {
            Some(c) => c,
            None => {
                let (child_bytes, child_type) = self.get_manifest(l, &child.digest)?;
                let cm: Manifest = serde_json::from_slice(&child_bytes)
                    .map_err(|e| l.registry(format!("manifest is not valid JSON: {e}")))?;
                let child_media = cm
                    .media_type
                    .clone()
                    .or(child.media_type.clone())
                    .or(child_type)
                    .unwrap_or_default();
                if cm.manifests.is_some() || child_media == OCI_INDEX || child_media == DOCKER_LIST
                {
                    return Err(l.registry("nested image indexes are not supported"));
                }
                let c = self.config_from_manifest(l, &cm, child.digest.clone())?;
                if let Some(cache) = &self.cache {
                    cache.put(platform, &c);
                }
                c
            }
        };
        config.digest = top_digest;
        if let Some(c) = &self.cache {
            c.put(platform, &config);
        }
        Ok(config)
    }

    fn config_from_manifest(
        &self,
        l: &Lookup,
        m: &Manifest,
        digest: String,
    ) -> Result<ImageConfig, ImageError> {
        let Some(desc) = &m.config else {
            return Err(l.registry("image manifest has no config descriptor"));
        };
        if !is_sha256(&desc.digest) {
            return Err(l.registry(format!(
                "config has an unsupported digest {:?} (only sha256)",
                desc.digest
            )));
        }
        let url = self.url(&l.r, &format!("blobs/{}", desc.digest));
        let mut resp = self.request(l, Method::Get, &url, None)?;
        self.check_status(l, &mut resp, &url, "config blob")?;
        let bytes = self.read_body(l, &mut resp, MAX_CONFIG, "config blob")?;
        let actual = sha256_digest(&bytes);
        if actual != desc.digest {
            return Err(ImageError::DigestMismatch {
                image: l.image.to_string(),
                what: "config blob".into(),
                expected: desc.digest.clone(),
                actual,
            });
        }
        if let Some(size) = desc.size {
            if size != bytes.len() as u64 {
                return Err(l.registry(format!(
                    "config blob is {} bytes, its descriptor says {size}",
                    bytes.len()
                )));
            }
        }
        let blob: ConfigBlob = serde_json::from_slice(&bytes)
            .map_err(|e| l.registry(format!("config blob is not a valid image config: {e}")))?;
        Ok(blob.config.unwrap_or_default().into_image_config(digest))
    }

    /// `HEAD` of a manifest: its digest, when the registry announces one.
    fn head_manifest(&self, l: &Lookup, reference: &str) -> Result<Option<String>, ImageError> {
        let url = self.url(&l.r, &format!("manifests/{reference}"));
        let mut resp = self.request(l, Method::Head, &url, Some(ACCEPT))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) && ![401, 403, 404, 429].contains(&status) {
            // A registry or proxy that does not do HEAD (405, 501, …): resolve with GET.
            return Ok(None);
        }
        self.check_status(l, &mut resp, &url, "manifest")?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
            .filter(|d| is_sha256(d)))
    }

    /// `GET` of a manifest, verified against `reference` when it is a digest and against
    /// the announced `Docker-Content-Digest` otherwise.
    fn get_manifest(
        &self,
        l: &Lookup,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let url = self.url(&l.r, &format!("manifests/{reference}"));
        let mut resp = self.request(l, Method::Get, &url, Some(ACCEPT))?;
        self.check_status(l, &mut resp, &url, "manifest")?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string());
        let bytes = self.read_body(l, &mut resp, MAX_MANIFEST, "manifest")?;
        let actual = sha256_digest(&bytes);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            announced.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != actual {
                return Err(ImageError::DigestMismatch {
                    image: l.image.to_string(),
                    what: format!("manifest {reference}"),
                    expected,
                    actual,
                });
            }
        }
        if let Some(ct) = content_type.as_deref() {
            if ct.starts_with(DOCKER_SCHEMA1_PREFIX) {
                return Err(l.registry(format!(
                    "the registry only offers a Docker schema 1 manifest ({ct}), which is not supported"
                )));
            }
        }
        Ok((bytes, content_type))
    }

    fn url(&self, r: &Reference, path: &str) -> String {
        let host = r.api_host();
        let plain = self
            .plain_http
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&host.to_ascii_lowercase());
        let scheme = if plain { "http" } else { "https" };
        format!("{scheme}://{host}/v2/{}/{path}", r.repository)
    }

    fn send(
        &self,
        l: &Lookup,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>, ImageError> {
        match self.send_once(method, url, accept, authorization) {
            Err(e) if speaks_no_tls(&e) => {
                // An insecure registry API host answering TLS with plain HTTP: use HTTP.
                let host = l.r.api_host();
                let https = format!("https://{host}/");
                match url.strip_prefix(&https) {
                    Some(rest) if self.is_insecure(host) => {
                        self.plain_http
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(host.to_ascii_lowercase());
                        let plain = format!("http://{host}/{rest}");
                        self.send_once(method, &plain, accept, authorization)
                            .map_err(|e| l.unreachable(describe(&e)))
                    }
                    _ => Err(l.unreachable(describe(&e))),
                }
            }
            other => other.map_err(|e| l.unreachable(describe(&e))),
        }
    }

    fn send_once(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>, ureq::Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = match method {
            Method::Get => self.agent.get(url),
            Method::Head => self.agent.head(url),
        };
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        req.call()
    }

    /// Sends a request, answering a `401` challenge once (basic or bearer).
    fn request(
        &self,
        l: &Lookup,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response<Body>, ImageError> {
        let key = (l.r.api_host().to_string(), l.r.repository.clone());
        let known = self
            .auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let resp = self.send(l, method, url, accept, known.as_deref())?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
            .ok_or_else(|| {
                l.unauthorized(
                    "401 Unauthorized without a Basic or Bearer WWW-Authenticate challenge",
                )
            })?;
        let (authorization, how) = self.authorize(l, &challenge)?;
        let resp = self.send(l, method, url, accept, Some(&authorization))?;
        if resp.status().as_u16() == 401 {
            return Err(l.unauthorized(format!("401 Unauthorized with {how}")));
        }
        self.auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, authorization);
        Ok(resp)
    }

    /// The `Authorization` value answering `challenge`, and how it was obtained (for errors).
    fn authorize(&self, l: &Lookup, challenge: &Challenge) -> Result<(String, String), ImageError> {
        let creds = self.creds.find(&l.r.registry, &l.r.repository);
        let files = || {
            let p = self.creds.paths();
            if p.is_empty() {
                "no auth file found".to_string()
            } else {
                format!(
                    "none in {}",
                    p.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        match challenge {
            Challenge::Basic => match creds {
                Some(c) => Ok((
                    c.basic_header(),
                    format!("the basic credentials of user {:?}", c.username),
                )),
                None => Err(l.unauthorized(format!(
                    "basic authentication required, no credentials for {} ({})",
                    l.r.registry,
                    files()
                ))),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let Some((scheme, realm_host)) = url_host(realm) else {
                    return Err(
                        l.unauthorized(format!("bearer realm {realm:?} is not an http(s) URL"))
                    );
                };
                if scheme.eq_ignore_ascii_case("http") && !self.is_insecure(realm_host) {
                    return Err(l.unauthorized(format!(
                        "refusing to fetch a token over plain http from {realm_host} (not loopback nor in STEPCTL_INSECURE_REGISTRIES)"
                    )));
                }
                let scope = scope
                    .clone()
                    .unwrap_or_else(|| format!("repository:{}:pull", l.r.repository));
                let mut url = realm.clone();
                url.push(if realm.contains('?') { '&' } else { '?' });
                if let Some(s) = service {
                    url.push_str(&format!("service={}&", url_encode(s)));
                }
                url.push_str(&format!("scope={}", url_encode(&scope)));
                let basic = creds.map(|c| c.basic_header());
                let how = match creds {
                    Some(c) => format!("a token fetched as user {:?}", c.username),
                    None => "an anonymous token".to_string(),
                };
                let mut resp = self.send(l, Method::Get, &url, None, basic.as_deref())?;
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    return Err(l.unauthorized(format!(
                        "token service {realm_host} refused {} ({status}) for scope {scope}",
                        match creds {
                            Some(c) => format!("user {:?}", c.username),
                            None => format!(
                                "an anonymous request, no credentials for {} ({})",
                                l.r.registry,
                                files()
                            ),
                        }
                    )));
                }
                if status != 200 {
                    return Err(
                        l.registry(format!("token service {realm_host} answered HTTP {status}"))
                    );
                }
                let body = self.read_body(l, &mut resp, MAX_SMALL, "token response")?;
                let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                    l.registry(format!("token service {realm_host} sent invalid JSON: {e}"))
                })?;
                let token = t
                    .token
                    .filter(|t| !t.is_empty())
                    .or(t.access_token.filter(|t| !t.is_empty()))
                    .ok_or_else(|| {
                        l.registry(format!("token service {realm_host} sent no token"))
                    })?;
                Ok((format!("Bearer {token}"), how))
            }
        }
    }

    fn check_status(
        &self,
        l: &Lookup,
        resp: &mut Response<Body>,
        url: &str,
        what: &str,
    ) -> Result<(), ImageError> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        // The registry's error body, `{"errors":[{"code","message"}]}`, when it sent one.
        let reason = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .ok()
            .and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok())
            .and_then(|b| b.errors.into_iter().next())
            .map(|e| format!(": {} {}", e.code, e.message).trim_end().to_string())
            .unwrap_or_default();
        Err(match status {
            404 => ImageError::NotFound {
                image: l.image.to_string(),
                detail: format!("{what} {} unknown (HTTP 404{reason})", l.r.reference()),
            },
            401 | 403 => l.unauthorized(format!("HTTP {status} for {what}{reason}")),
            429 => l.registry(format!("rate limited (HTTP 429) fetching {what}")),
            _ => l.registry(format!(
                "{what} {}: HTTP {status}{reason}",
                strip_scheme(url)
            )),
        })
    }

    fn read_body(
        &self,
        l: &Lookup,
        resp: &mut Response<Body>,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, ImageError> {
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    l.registry(format!("{what} is larger than {limit} bytes"))
                }
                e => l.unreachable(format!("reading {what}: {}", describe(&e))),
            })
    }
}

fn strip_scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, r)| r)
}

/// Whether a TLS handshake failed because the server answered with something that is not
/// TLS (a plain HTTP server), as opposed to a certificate or connection problem.
fn speaks_no_tls(e: &ureq::Error) -> bool {
    let rustls_err = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    matches!(rustls_err, Some(rustls::Error::InvalidMessage(_)))
}

/// A short text for a transport error.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::ConnectionReset => "connection reset".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => format!("TLS: {io}"),
            _ => io.to_string(),
        },
        ureq::Error::Rustls(r) => format!("TLS: {r}"),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        e => e.to_string(),
    }
}

/// The index entry for `want`: same os and architecture, then the best variant match
/// (exact; unset on either side; arm64's implicit `v8`), in index order.
fn select_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let norm = |arch: &str, v: Option<&str>| -> Option<String> {
        match (arch, v) {
            (_, Some("")) | (_, None) => match arch {
                "arm64" => Some("v8".to_string()),
                _ => None,
            },
            (_, Some(v)) => Some(v.to_string()),
        }
    };
    let want_variant = norm(&want.architecture, want.variant.as_deref());
    let mut fallback = None;
    for d in entries {
        let Some(p) = &d.platform else { continue };
        if p.os != want.os || p.architecture != want.architecture {
            continue;
        }
        let have = norm(&p.architecture, p.variant.as_deref());
        if have == want_variant {
            return Some(d);
        }
        if fallback.is_none() && (have.is_none() || want_variant.is_none()) {
            fallback = Some(d);
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: None,
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: None,
            platform: Some(DescriptorPlatform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(String::from),
            }),
        }
    }

    #[test]
    fn platform_selection() {
        let idx = vec![
            desc("unknown", "unknown", None, 0),
            desc("linux", "arm", Some("v6"), 1),
            desc("linux", "arm", Some("v7"), 2),
            desc("linux", "arm64", Some("v8"), 3),
            desc("linux", "amd64", None, 4),
            desc("windows", "amd64", None, 5),
        ];
        let pick = |p: &str| {
            select_platform(&idx, &Platform::parse(p).unwrap()).map(|d| d.digest[7..9].to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("04"));
        assert_eq!(pick("windows/amd64").as_deref(), Some("05"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("03"));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("03"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("02"));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some("01"));
        assert_eq!(pick("linux/arm").as_deref(), Some("01"));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        // An entry without variant serves a request with one.
        let idx2 = vec![desc("linux", "arm64", None, 9)];
        assert!(select_platform(&idx2, &Platform::parse("linux/arm64/v8").unwrap()).is_some());
    }

    #[test]
    fn helpers() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            url_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(
            url_host("http://127.0.0.1:9/token?x"),
            Some(("http", "127.0.0.1:9"))
        );
        assert_eq!(url_host("ftp://h/"), None);
        let c = RegistryClient::new(RegistryOptions {
            insecure_hosts: vec!["Reg.Example:5000".into(), "plain.example".into()],
            ..Default::default()
        })
        .unwrap();
        for h in [
            "localhost:5000",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:80",
            "reg.example:5000",
            "plain.example:1",
        ] {
            assert!(c.is_insecure(h), "{h}");
        }
        for h in [
            "reg.example:5001",
            "reg.example",
            "10.0.0.1:5000",
            "localhost.example",
        ] {
            assert!(!c.is_insecure(h), "{h}");
        }
    }
}
