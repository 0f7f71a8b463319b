//! The middle of the pipeline: decide which entries go on, and under which name and db.
//!
//! - [`filter`]: `--db`, `--key`, `--key-regex`, `--exclude-key`, `--type`;
//! - [`commands`]: the command-key table (which arguments of a command are keys).
//!
//! Filters are shared by every command. This stage never decodes values; it looks at db, key
//! and type only.

pub mod commands;
pub mod filter;

pub use filter::{Filter, FilterSpec};
