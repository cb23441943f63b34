//! The TestWorkflow and TestWorkflowTemplate fields stepctl reads, as typed structs: they are the
//! allow-list (a field they do not declare is refused with the list of those they do, see
//! `de.rs`). Field names and meanings are those of the CRD (kubeshop/testkube
//! `api/testworkflows/v1`); fields that change nothing here are read and ignored with a warning
//! (`Ignored`). Texts Testkube expands `{{ }}` in are [`Text`]s.

use super::text::{ExprSrc, Text, TextList};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A field read and ignored (it changes nothing in stepctl): warned about.
pub type Ignored = Option<IgnoredAny>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub namespace: Ignored,
    pub annotations: Ignored,
    pub uid: Ignored,
    pub resource_version: Ignored,
    pub generation: Ignored,
    pub creation_timestamp: Ignored,
    pub managed_fields: Ignored,
    pub generate_name: Ignored,
}

/// A TestWorkflow or TestWorkflowTemplate document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document {
    pub api_version: Option<String>,
    pub kind: String,
    pub metadata: Metadata,
    /// Shown in the report's header.
    pub description: Option<String>,
    #[serde(default)]
    pub spec: Spec,
    pub status: Ignored,
}

/// `spec` of both kinds (a template has no `use`, its steps neither `use` nor `template`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub r#use: Vec<TemplateRef>,
    #[serde(default)]
    pub config: BTreeMap<String, Param>,
    pub container: Option<Container>,
    pub system: Option<System>,
    /// Merged into the generated Pod spec (every text in it templated).
    pub pod: Option<Map<String, Value>>,
    /// Merged into the generated Job (every text in it templated).
    pub job: Option<Map<String, Value>>,
    #[serde(default)]
    pub setup: Vec<Step>,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub after: Vec<Step>,
    pub events: Ignored,
    pub notifications: Ignored,
    pub execution: Ignored,
    pub timeouts: Ignored,
    pub concurrency: Ignored,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct System {
    pub pure_by_default: Option<bool>,
    pub isolated_containers: Option<bool>,
}

/// `use: [{name, config}]`, `template: {name, config}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    pub name: String,
    #[serde(default)]
    pub config: BTreeMap<String, Text>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
}

/// A config parameter's schema.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Param {
    #[serde(default)]
    pub r#type: ParamType,
    pub description: Option<String>,
    /// Without one, the parameter is required.
    pub default: Option<Text>,
    pub r#enum: Option<Vec<Text>>,
    #[serde(default)]
    pub sensitive: bool,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    pub exclusive_minimum: Option<i64>,
    pub exclusive_maximum: Option<i64>,
    pub example: Ignored,
    /// Not checked by stepctl (warned about).
    pub pattern: Option<String>,
    pub format: Option<String>,
    pub multiple_of: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    pub count: u32,
    /// An expression; default `passed`.
    pub until: Option<ExprSrc>,
}

/// One step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    pub name: Option<Text>,
    /// The name expressions use (`step.ID.outputs.KEY`); derived from the name when absent.
    pub id: Option<String>,
    /// An expression (`passed`, `always`, `failed && env.CI == 'true'`).
    pub condition: Option<ExprSrc>,
    pub negative: Option<bool>,
    pub optional: Option<bool>,
    pub pure: Option<bool>,
    pub retry: Option<Retry>,
    pub timeout: Option<Text>,
    /// Waited before the step runs (`5s`).
    pub delay: Option<String>,
    pub working_dir: Option<Text>,
    pub container: Option<Container>,
    pub run: Option<Run>,
    pub shell: Option<Text>,
    #[serde(default)]
    pub r#use: Vec<TemplateRef>,
    pub template: Option<TemplateRef>,
    #[serde(default)]
    pub setup: Vec<Step>,
    #[serde(default)]
    pub steps: Vec<Step>,
    pub description: Ignored,
    pub paused: Ignored,
}

macro_rules! container_struct {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            pub working_dir: Option<Text>,
            pub image: Option<Text>,
            pub image_pull_policy: Option<Text>,
            #[serde(default)]
            pub env: Vec<EnvVar>,
            pub command: Option<TextList>,
            pub args: Option<TextList>,
            pub resources: Option<Resources>,
            pub security_context: Option<SecurityContext>,
            #[serde(default)]
            pub volume_mounts: Vec<VolumeMount>,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
    };
}

container_struct!(
    /// `container`: defaults for a step and what it contains.
    Container {}
);

container_struct!(
    /// `run`: the step's own container settings, and optionally its shell script.
    Run {
        shell: Option<Text>,
    }
);

impl Run {
    /// The container part of `run`, and its shell.
    pub fn split(self) -> (Container, Option<Text>) {
        (
            Container {
                working_dir: self.working_dir,
                image: self.image,
                image_pull_policy: self.image_pull_policy,
                env: self.env,
                command: self.command,
                args: self.args,
                resources: self.resources,
                security_context: self.security_context,
                volume_mounts: self.volume_mounts,
            },
            self.shell,
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: Text,
    pub value: Option<Text>,
    pub value_from: Option<ValueFrom>,
}

/// Kubernetes' `env[].valueFrom`: exactly one source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValueFrom {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<ResourceFieldRef>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyRef {
    pub name: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceFieldRef {
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divisor: Option<Value>,
}

/// `resources`: requests and limits of cpu, memory, ephemeral-storage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub requests: Option<Quantities>,
    pub limits: Option<Quantities>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantities {
    pub cpu: Option<Text>,
    pub memory: Option<Text>,
    #[serde(rename = "ephemeral-storage")]
    pub ephemeral_storage: Option<Text>,
}

/// A container's `securityContext` (Kubernetes' fields).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_armor_profile: Option<Profile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proc_mount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub se_linux_options: Option<SeLinuxOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<Profile>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    pub r#type: ProfileType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ProfileType {
    RuntimeDefault,
    Localhost,
    Unconfined,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeLinuxOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path_expr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_propagation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursive_read_only: Option<String>,
}
