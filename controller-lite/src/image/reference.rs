//! Image references: `[host[:port]/]path[:tag][@sha256:hex]`, normalised like docker does.

use std::fmt;

use super::ImageError;

/// The registry an image without a host comes from.
pub(crate) const DEFAULT_REGISTRY: &str = "docker.io";
/// The API endpoint of [`DEFAULT_REGISTRY`] (it serves no API under its own name).
const DEFAULT_REGISTRY_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry as written (`docker.io` when omitted), e.g. `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `None` when omitted (then [`Reference::reference`] is `latest` unless a digest
    /// is given).
    pub tag: Option<String>,
    /// Digest `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// The host (and port) to send API requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DEFAULT_REGISTRY_API
        } else {
            &self.registry
        }
    }

    /// What goes into `/v2/<repository>/manifests/<reference>`: the digest when pinned,
    /// else the tag, else `latest`.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// Whether `hostport` names this machine: `localhost`, `*.localhost`, `127.0.0.0/8`, `::1`.
pub(crate) fn is_loopback(hostport: &str) -> bool {
    let hostport = hostport.to_ascii_lowercase();
    let host = host_without_port(&hostport);
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` → `host`, `[::1]:5000` → `::1`.
pub(crate) fn host_without_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        if self.tag.is_none() && self.digest.is_none() {
            write!(f, ":latest")?;
        }
        Ok(())
    }
}

/// Parses an image reference with docker's defaults: no host means `docker.io`, a
/// single-component name there gets `library/`, the first component is a host when it
/// contains `.` or `:` or is `localhost`. Only `sha256` digests are accepted.
pub fn parse_reference(s: &str) -> Result<Reference, ImageError> {
    let err = |reason: &str| ImageError::InvalidReference {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("contains whitespace or control characters"));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    let digest = match digest {
        None => None,
        Some(d) => {
            let Some((algo, hex)) = d.split_once(':') else {
                return Err(err("digest must look like sha256:<64 hex digits>"));
            };
            if algo != "sha256" {
                return Err(err(&format!(
                    "unsupported digest algorithm {algo:?} (only sha256)"
                )));
            }
            if hex.len() != 64
                || !hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            {
                return Err(err(
                    "digest must look like sha256:<64 lowercase hex digits>",
                ));
            }
            Some(d.to_string())
        }
    };
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if !matches!(last_slash, Some(j) if j > i) => {
            (&name_tag[..i], Some(&name_tag[i + 1..]))
        }
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !ok {
            return Err(err(&format!(
                "invalid tag {t:?} (letters, digits, '_', '.', '-'; at most 128)"
            )));
        }
    }
    if name.is_empty() {
        return Err(err("missing repository name"));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    validate_host(&registry).map_err(|r| err(&r))?;
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
        _ => registry,
    };
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if repository.len() > 255 {
        return Err(err("repository name longer than 255 characters"));
    }
    for component in repository.split('/') {
        validate_component(component).map_err(|r| err(&r))?;
    }
    Ok(Reference {
        registry,
        repository,
        tag: tag.map(String::from),
        digest,
    })
}

fn validate_host(host: &str) -> Result<(), String> {
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(format!("invalid registry host {host:?}"));
        };
        if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("invalid registry host {host:?}"));
        }
        match after {
            "" => return Ok(()),
            a => match a.strip_prefix(':') {
                Some(p) => (inner, Some(p)),
                None => return Err(format!("invalid registry host {host:?}")),
            },
        }
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !host.starts_with('[') && !h.split('.').all(label_ok) {
        return Err(format!("invalid registry host {host:?}"));
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid port in registry host {host:?}"));
        }
        if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
            return Err(format!("invalid port in registry host {host:?}"));
        }
    }
    Ok(())
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or dashes.
fn validate_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("empty path component in repository name".into());
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err(format!("repository name must be lowercase, got {c:?}"));
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "repository path component {c:?} must start and end with a letter or digit"
        ));
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return Err(format!(
                "invalid characters {sep:?} in repository path component {c:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn r(s: &str) -> Reference {
        parse_reference(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn defaults() {
        let x = r("busybox");
        assert_eq!(
            (x.registry.as_str(), x.repository.as_str(), x.tag.as_deref()),
            ("docker.io", "library/busybox", None)
        );
        assert_eq!(x.reference(), "latest");
        assert_eq!(x.api_host(), "registry-1.docker.io");
        assert_eq!(x.to_string(), "docker.io/library/busybox:latest");
        let x = r("org/app:1.2");
        assert_eq!(x.repository, "org/app");
        assert_eq!(x.tag.as_deref(), Some("1.2"));
        assert_eq!(r("index.docker.io/library/alpine").registry, "docker.io");
        assert_eq!(r("docker.io/alpine").repository, "library/alpine");
    }

    #[test]
    fn hosts_ports_digests() {
        let x = r(&format!("127.0.0.1:5000/team/app:v1@{D}"));
        assert_eq!(x.registry, "127.0.0.1:5000");
        assert_eq!(x.repository, "team/app");
        assert_eq!(x.tag.as_deref(), Some("v1"));
        assert_eq!(x.digest.as_deref(), Some(D));
        assert_eq!(x.reference(), D);
        assert_eq!(x.api_host(), "127.0.0.1:5000");
        assert_eq!(host_without_port(&x.registry), "127.0.0.1");
        let x = r("localhost/app");
        assert_eq!(
            (x.registry.as_str(), x.repository.as_str()),
            ("localhost", "app")
        );
        let x = r("localhost:5000/a/b/c");
        assert_eq!(x.repository, "a/b/c");
        assert_eq!(x.tag, None);
        let x = r("[::1]:5000/app:t");
        assert_eq!(host_without_port(&x.registry), "::1");
        let x = r("quay.example/ns/img__x.y-z");
        assert_eq!(x.repository, "ns/img__x.y-z");
        let x = r(&format!("app@{D}"));
        assert_eq!(x.tag, None);
        assert_eq!(x.to_string(), format!("docker.io/library/app@{D}"));
    }

    #[test]
    fn bad_references() {
        for (input, why) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("app:", "invalid tag"),
            ("app:-x", "invalid tag"),
            ("app@sha256:abc", "64 lowercase hex"),
            ("app@md5:0123", "unsupported digest algorithm"),
            ("app@latest", "digest must look like"),
            ("a//b", "empty path component"),
            ("a/b_", "must start and end"),
            ("a/b...c", "invalid characters"),
            ("host:99999/app", "invalid port"),
            ("host:/app", "invalid"),
            ("my app", "whitespace"),
            ("127.0.0.1:5000/", "empty path component"),
        ] {
            let e = parse_reference(input).unwrap_err().to_string();
            assert!(e.contains(why), "{input:?}: {e}");
            assert!(e.starts_with("invalid image reference"), "{e}");
        }
    }
}
