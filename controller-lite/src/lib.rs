//! stepctl (controller-lite): Testkube TestWorkflow YAML in, pods around the stepinit `/init` out;
//! runs them on this host (`local`), on podman or on Kubernetes.
//!
//! Modules: [`workflow`] (parse/validate), [`plan`] (flatten/merge -> spec), [`manifest`]
//! (Kubernetes YAML), [`engine`] (local, podman, kubernetes), [`follow`] (log following and
//! decoding), [`report`] (text, JSON, JUnit).

pub mod duration;
pub mod engine;
pub mod follow;
pub mod image;
pub mod manifest;
pub mod plan;
pub mod report;
pub mod signals;
pub mod workflow;
pub mod yaml;
