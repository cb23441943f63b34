//! On-disk cache of image configs, keyed by manifest digest and platform.
//!
//! A digest names immutable content, so an entry never goes stale: `sha256-<hex>.<os>-<arch>[-<variant>].json`
//! holds the [`ImageConfig`] that the manifest (or index, for that platform) with this digest
//! leads to. Entries are written to a temporary file and renamed, so concurrent stepctl runs
//! never read half an entry; unreadable or foreign entries are ignored (and overwritten).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ImageConfig, Platform};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Entry {
    version: u32,
    platform: String,
    config: ImageConfig,
}

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub(crate) fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str, platform: &Platform) -> Option<PathBuf> {
        let (algo, hex) = digest.split_once(':')?;
        if algo != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut name = format!(
            "{algo}-{hex}.{}-{}",
            safe(&platform.os),
            safe(&platform.architecture)
        );
        if let Some(v) = &platform.variant {
            name.push('-');
            name.push_str(&safe(v));
        }
        name.push_str(".json");
        Some(self.dir.join(name))
    }

    /// The cached config for `digest` on `platform`, if any.
    pub(crate) fn get(&self, digest: &str, platform: &Platform) -> Option<ImageConfig> {
        let path = self.path(digest, platform)?;
        let bytes = std::fs::read(path).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        (entry.version == VERSION
            && entry.platform == platform.to_string()
            && entry.config.digest == digest)
            .then_some(entry.config)
    }

    /// Stores `config` (whose `digest` is the key). Failures are ignored: the cache is an
    /// optimisation and a read-only or full disk must not fail a lookup that succeeded.
    pub(crate) fn put(&self, platform: &Platform, config: &ImageConfig) {
        let _ = self.try_put(platform, config);
    }

    fn try_put(&self, platform: &Platform, config: &ImageConfig) -> std::io::Result<()> {
        let Some(path) = self.path(&config.digest, platform) else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.dir)?;
        let entry = Entry {
            version: VERSION,
            platform: platform.to_string(),
            config: config.clone(),
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry")
        ));
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_keys() {
        let dir = std::env::temp_dir().join(format!("stepctl-cache-{}", std::process::id()));
        let cache = Cache::new(dir.clone());
        let d = format!("sha256:{}", "ab".repeat(32));
        let amd = Platform::parse("linux/amd64").unwrap();
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert!(cache.get(&d, &amd).is_none());
        let cfg = ImageConfig {
            entrypoint: vec!["/e".into()],
            cmd: vec!["c".into()],
            working_dir: Some("/w".into()),
            user: Some("1:2".into()),
            env: vec![("A".into(), "b".into())],
            digest: d.clone(),
        };
        cache.put(&amd, &cfg);
        assert_eq!(cache.get(&d, &amd), Some(cfg.clone()));
        assert!(cache.get(&d, &arm).is_none());
        cache.put(&arm, &cfg);
        assert!(dir
            .join(format!("sha256-{}.linux-arm64-v8.json", "ab".repeat(32)))
            .exists());
        // Garbage is a miss, not an error.
        let p = cache.path(&d, &amd).unwrap();
        std::fs::write(&p, "garbage").unwrap();
        assert!(cache.get(&d, &amd).is_none());
        // Bad digests never become paths.
        assert!(cache.path("sha256:../../etc", &amd).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
