//! Registry credentials (docker-style auth files) and `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

use super::reference::DEFAULT_REGISTRY;

/// A user name and password (or token used as password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials read from auth files, in lookup order.
#[derive(Debug, Clone, Default)]
pub(crate) struct CredentialStore {
    /// (normalised key: `host[/path]`, credentials), per file in order.
    files: Vec<(PathBuf, Vec<(String, Credentials)>)>,
}

impl CredentialStore {
    /// Reads the given files; missing files are skipped, unreadable or malformed ones are an
    /// error naming the file.
    pub(crate) fn load(paths: &[PathBuf]) -> Result<CredentialStore, String> {
        let mut files = Vec::new();
        for p in paths {
            let text = match std::fs::read_to_string(p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot read auth file {}: {e}", p.display())),
            };
            files.push((p.clone(), parse_auth_file(p, &text)?));
        }
        Ok(CredentialStore { files })
    }

    /// The credentials for `registry` (as in a reference) and `repository`: within the first
    /// file that has a matching entry, the most specific key (`host/ns/repo` over `host`).
    pub(crate) fn find(&self, registry: &str, repository: &str) -> Option<&Credentials> {
        let registry = registry.to_ascii_lowercase();
        let hosts: Vec<&str> = if registry == DEFAULT_REGISTRY {
            vec![DEFAULT_REGISTRY, "index.docker.io", "registry-1.docker.io"]
        } else {
            vec![registry.as_str()]
        };
        for (_, entries) in &self.files {
            let mut best: Option<(usize, &Credentials)> = None;
            for (key, creds) in entries {
                let (khost, kpath) = match key.split_once('/') {
                    Some((h, p)) => (h, Some(p)),
                    None => (key.as_str(), None),
                };
                if !hosts.contains(&khost) {
                    continue;
                }
                let specificity = match kpath {
                    None => 0,
                    Some(p)
                        if repository == p
                            || repository.starts_with(&format!("{}/", p.trim_end_matches('/'))) =>
                    {
                        p.len()
                    }
                    Some(_) => continue,
                };
                if !matches!(best, Some((s, _)) if s >= specificity) {
                    best = Some((specificity, creds));
                }
            }
            if let Some((_, c)) = best {
                return Some(c);
            }
        }
        None
    }

    /// The auth files that were read, for messages.
    pub(crate) fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|(p, _)| p.as_path()).collect()
    }
}

fn parse_auth_file(path: &Path, text: &str) -> Result<Vec<(String, Credentials)>, String> {
    let file: AuthFile = serde_json::from_str(text)
        .map_err(|e| format!("auth file {}: invalid JSON: {e}", path.display()))?;
    let mut out = Vec::new();
    for (key, entry) in file.auths {
        let creds = if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = STANDARD
                .decode(a.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    format!(
                        "auth file {}: auths.{key:?}.auth is not base64 of user:password",
                        path.display()
                    )
                })?;
            let Some((u, p)) = decoded.split_once(':') else {
                return Err(format!(
                    "auth file {}: auths.{key:?}.auth is not base64 of user:password",
                    path.display()
                ));
            };
            Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }
        } else if let (Some(u), Some(p)) = (entry.username, entry.password) {
            Credentials {
                username: u,
                password: p,
            }
        } else {
            continue; // e.g. an entry for a credential helper or an identity token
        };
        out.push((normalise_key(&key), creds));
    }
    Ok(out)
}

/// `https://host/v1/` → `host`; `host/ns` stays; lowercased host.
fn normalise_key(key: &str) -> String {
    let had_scheme = key.contains("://");
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match k.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (k, ""),
    };
    let host = host.to_ascii_lowercase();
    // A URL's path (docker's `/v1/`) is an API path, not a repository namespace.
    if had_scheme || path.is_empty() {
        host
    } else {
        format!("{host}/{path}")
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first challenge we can use out of a `WWW-Authenticate` value.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((s, r)) => (s, r.trim()),
        None => (header, ""),
    };
    let params = parse_params(rest);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `a="x, y",b=z` → [(a, "x, y"), (b, z)], with `\"` escapes in quoted strings.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| *c == ',' || c.is_ascii_whitespace())
        {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name.trim().to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="http://127.0.0.1:9/token",service="reg, x",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:9/token".into(),
                service: Some("reg, x".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://h/t"),
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn auth_file_lookup() {
        let dir = std::env::temp_dir().join(format!("stepctl-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f1 = dir.join("a.json");
        let f2 = dir.join("b.json");
        let enc = |s: &str| STANDARD.encode(s);
        std::fs::write(
            &f1,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},"127.0.0.1:5000/team":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"helper.example":{{}}}},"credsStore":"x"}}"#,
                enc("u:p:with:colons"),
                enc("team:tp"),
                enc("hub:hp")
            ),
        )
        .unwrap();
        std::fs::write(
            &f2,
            r#"{"auths":{"other.example":{"username":"o","password":"op"}}}"#,
        )
        .unwrap();
        let store =
            CredentialStore::load(&[f1.clone(), dir.join("missing.json"), f2.clone()]).unwrap();
        assert_eq!(store.paths().len(), 2);
        let c = store.find("127.0.0.1:5000", "app").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("u", "p:with:colons")
        );
        assert_eq!(
            store.find("127.0.0.1:5000", "team/app").unwrap().username,
            "team"
        );
        assert_eq!(
            store.find("127.0.0.1:5000", "teamx/app").unwrap().username,
            "u"
        );
        assert_eq!(
            store.find("docker.io", "library/x").unwrap().username,
            "hub"
        );
        assert_eq!(store.find("other.example", "x").unwrap().password, "op");
        assert!(store.find("helper.example", "x").is_none());
        assert!(store.find("127.0.0.1:5001", "x").is_none());
        assert_eq!(
            c.basic_header(),
            format!("Basic {}", enc("u:p:with:colons"))
        );
        assert!(!format!("{c:?}").contains("colons"));

        std::fs::write(&f2, "{not json").unwrap();
        let e = CredentialStore::load(std::slice::from_ref(&f2)).unwrap_err();
        assert!(e.contains("b.json") && e.contains("invalid JSON"), "{e}");
        std::fs::write(&f2, r#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#).unwrap();
        let e = CredentialStore::load(&[f2]).unwrap_err();
        assert!(e.contains("not base64 of user:password"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
