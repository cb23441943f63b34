//! The contract between the stepinit `/init` and any controller.
//!
//! - [`spec`]: what the init executes (a JSON file, versioned, validated with field paths).
//! - [`record`]: what the init reports (step start, step end, summary), as compact JSON lines.
//! - [`summary`]: the compact per-container summary written to the termination-message file.
//! - [`expr`]: expressions a leaf's condition or fields are computed from when it starts (what
//!   the controller could not know): a small evaluated form, so the init needs no parser.
//! - [`attempts`]: how a reader of several inits' records drops the repeats a continued journal
//!   makes, and refuses contradictions.
//! - [`frame`]: how records and the steps' own bytes share one byte stream, so that no byte a step
//!   prints can ever decode as a record; [`frame::Decoder`] is the streaming decoder.
//!
//! The byte format, versioning rules and threat model are in `protocol/README.md`.
//! This crate depends on serde only; JSON parsing of the spec is left to the caller.

pub mod attempts;
pub mod expr;
pub mod frame;
pub mod record;
pub mod spec;
pub mod summary;

pub use frame::{Decoded, Decoder, Event, Framer, MARKER};
pub use record::{Record, Status};
pub use spec::{Condition, Spec, SpecError, Step};

/// The protocol's major version: records carry it as `"v"`, specs as `"version"`.
pub const VERSION: u32 = 1;
