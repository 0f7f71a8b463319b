//! AOF files: the multi-part manifest (the command reader follows).
//!
//! Source stage of the pipeline (FORMATS.md §10). [`manifest`] lists the files of a Redis 7
//! `appendonlydir` in replay order.
//!
//! Not here: the RDB preamble or `.base.rdb` file (read it with `crate::rdb`).

pub mod error;
pub mod manifest;

pub use error::{AofError, AofErrorKind};
pub use manifest::{AofFileKind, Manifest, ManifestEntry};
