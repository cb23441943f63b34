//! Image metadata from podman's local storage.

use std::process::{Command, Stdio};

use serde::Deserialize;

use super::{ImageConfig, ImageError, RawConfig};

#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "Id", default)]
    id: String,
    #[serde(rename = "Digest", default)]
    digest: String,
    #[serde(rename = "Config", default)]
    config: Option<RawConfig>,
}

/// The config of `image` as `podman image inspect` reports it. The image must be in the
/// local storage ([`ImageError::NotLocal`] otherwise); see [`pull_and_inspect_podman`].
/// `podman` is run from `$PATH`; `CONTAINERS_CONF` and friends are passed through.
pub fn inspect_podman(image: &str) -> Result<ImageConfig, ImageError> {
    if image.is_empty() || image.starts_with('-') {
        return Err(ImageError::InvalidReference {
            input: image.to_string(),
            reason: "not an image name".into(),
        });
    }
    let podman_err = |detail: String| ImageError::Podman {
        image: image.to_string(),
        detail: format!("podman image inspect failed: {detail}"),
    };
    let out = Command::new("podman")
        .args(["image", "inspect", "--", image])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            podman_err(if e.kind() == std::io::ErrorKind::NotFound {
                "podman is not installed (not found on PATH)".to_string()
            } else {
                format!("cannot run podman: {e}")
            })
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        if stderr.contains("image not known") || stderr.contains("no such image") {
            return Err(ImageError::NotLocal {
                image: image.to_string(),
            });
        }
        let line = stderr.lines().last().unwrap_or("").trim();
        return Err(podman_err(if line.is_empty() {
            format!("podman exited with {}", out.status)
        } else {
            line.to_string()
        }));
    }
    let mut list: Vec<Inspect> = serde_json::from_slice(&out.stdout)
        .map_err(|e| podman_err(format!("unexpected `podman image inspect` output: {e}")))?;
    if list.is_empty() {
        return Err(ImageError::NotLocal {
            image: image.to_string(),
        });
    }
    let first = list.swap_remove(0);
    let digest = if first.digest.is_empty() {
        // Images built locally and never pushed may have no manifest digest yet; their ID
        // (the config digest) still identifies them.
        format!("sha256:{}", first.id.trim_start_matches("sha256:"))
    } else {
        first.digest
    };
    Ok(first.config.unwrap_or_default().into_image_config(digest))
}

/// Like [`inspect_podman`], but pulls the image first when it is not in the local storage
/// (with podman's own registries and credentials configuration; `--tls-verify=false` for
/// loopback registries only, as the registry client allows plain HTTP there).
pub fn pull_and_inspect_podman(image: &str) -> Result<ImageConfig, ImageError> {
    match inspect_podman(image) {
        Err(ImageError::NotLocal { .. }) => {}
        other => return other,
    }
    // Like the registry client: a registry on this machine may speak plain HTTP.
    let loopback =
        super::parse_reference(image).is_ok_and(|r| super::reference::is_loopback(&r.registry));
    let out = Command::new("podman")
        .args(["pull", "--quiet"])
        .args(loopback.then_some("--tls-verify=false"))
        .args(["--", image])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::Podman {
            image: image.to_string(),
            detail: format!("cannot run podman pull: {e}"),
        })?;
    // The last line of podman's error, e.g. "…: connection refused".
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        let line = if line.is_empty() {
            format!("exited with {}", out.status)
        } else {
            line.trim_start_matches("Error: ").to_string()
        };
        return Err(ImageError::Podman {
            image: image.to_string(),
            detail: format!("podman pull failed ({line}); {}", super::FIELDS_INSTEAD),
        });
    }
    inspect_podman(image)
}
