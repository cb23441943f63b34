//! stepctl (controller-lite): Testkube TestWorkflow YAML in, pods around the stepinit `/init` out;
//! runs them on this host (`local`), on podman or on Kubernetes.
//!
//! Layers, in the order a workflow goes through them:
//! - parse: [`yaml`] (bounded YAML documents), [`testworkflow`] (the TestWorkflow language:
//!   typed CRD fields, templates, config, [`expr`]essions) into the model of [`workflow`];
//! - plan: [`plan`] (steps to containers, the init's spec);
//! - manifest: [`manifest`] (Kubernetes objects);
//! - engine: [`engine`] (local, podman, kubernetes), [`follow`] (log following, decoding,
//!   record authentication), [`report`] (text, JSON, JUnit).

pub mod duration;
pub mod engine;
pub mod expr;
pub mod follow;
pub mod image;
pub mod manifest;
pub mod plan;
pub mod report;
pub mod signals;
pub mod testworkflow;
pub mod workflow;
pub mod yaml;
