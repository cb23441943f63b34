//! `stepctl build` output: golden files, and validation with `kubernetes-validate` (PyPI) against
//! the newest Kubernetes version it ships, in strict mode (unknown fields are errors).
//!
//! Regenerate the golden files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p stepctl --test manifests`.

use std::path::{Path, PathBuf};
use std::process::Command;

const KUBERNETES_VERSION: &str = "1.37.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// (golden file, workflow, extra build args)
fn cases() -> Vec<(&'static str, PathBuf, Vec<&'static str>)> {
    let wf = |n: &str| root().join("tests/workflows").join(n);
    vec![
        ("pure-steps.pod.yaml", wf("pure-steps.yaml"), vec![]),
        (
            "pure-steps.pod-restricted.yaml",
            wf("pure-steps.yaml"),
            vec!["--restricted"],
        ),
        (
            "conditions.job.yaml",
            wf("conditions.yaml"),
            vec!["--kind", "job"],
        ),
        (
            "defaults-no-registry.job-restricted.yaml",
            wf("defaults-no-registry.yaml"),
            vec!["--kind", "job", "--restricted"],
        ),
        (
            "overrides.job.yaml",
            wf("overrides.yaml"),
            vec!["--kind", "job"],
        ),
        (
            "hello.pod.yaml",
            root().join("../examples/hello.yaml"),
            vec!["--init-image", "localhost:5000/stepinit/init:1.0"],
        ),
    ]
}

fn build(workflow: &Path, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_stepctl"))
        .arg("build")
        .args(["--images", "none"])
        .args(extra)
        .arg(workflow)
        .output()
        .expect("run stepctl build");
    assert!(
        o.status.success(),
        "stepctl build {} failed: {}",
        workflow.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let yaml = String::from_utf8(o.stdout).expect("UTF-8 YAML");
    // Each build has a state key of its own (random): one line, under the Secret's stringData.
    let keys: Vec<&str> = yaml.lines().filter(|l| l.starts_with("  key: ")).collect();
    assert_eq!(keys.len(), 1, "one state key in\n{yaml}");
    let key = &keys[0]["  key: ".len()..];
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    assert_eq!(
        yaml.matches(key).count(),
        1,
        "the key is only in the Secret"
    );
    yaml.replace(key, "<random state key>")
}

#[test]
fn manifests_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = root().join("tests/golden");
    let mut mismatches = Vec::new();
    for (golden, wf, extra) in cases() {
        let got = build(&wf, &extra);
        let path = dir.join(golden);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
        if got != want {
            mismatches.push(format!("{golden}:\n--- want\n{want}\n--- got\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn validate(file: &Path) -> std::process::Output {
    match Command::new("kubernetes-validate")
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(file)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "kubernetes-validate cannot run ({e}): install it (`pip install kubernetes-validate`, done by tests/install-deps)"
        ),
    }
}

#[test]
fn manifests_pass_kubernetes_validate() {
    let tmp = std::env::temp_dir().join(format!("stepctl-validate-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (golden, wf, extra) in cases() {
        let f = tmp.join(golden);
        std::fs::write(&f, build(&wf, &extra)).unwrap();
        let o = validate(&f);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{golden} is invalid:\n{text}");
        // Every object was checked (a ConfigMap, a Secret and a Pod or Job), none skipped.
        assert_eq!(
            text.matches("passed for resource").count(),
            3,
            "{golden}:\n{text}"
        );
    }
    // The validator does reject what Kubernetes rejects: a misspelled field.
    let bad = build(&cases()[0].1, &[]).replace(
        "restartPolicy: Never",
        "restartPolicy: Never\n  restartPolicyy: Never",
    );
    let f = tmp.join("bad.yaml");
    std::fs::write(&f, bad).unwrap();
    assert!(
        !validate(&f).status.success(),
        "kubernetes-validate accepted an unknown field"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
