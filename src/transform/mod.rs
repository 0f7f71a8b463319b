//! The middle of the pipeline: decide which entries go on, and under which name and db.
//!
//! - [`filter`]: `--db`, `--key`, `--key-regex`, `--exclude-key`, `--type`, `--shard`;
//! - [`commands`]: the command-key table (which arguments of a command are keys);
//! - [`keymap`]: [`KeyMap`], the whole mapping of a run (filters, renames, db mapping, for
//!   keys and commands), built once by the CLI.
//!
//! Filters are shared by every command. This stage never decodes values; it looks at db, key
//! and type only.

pub mod commands;
pub mod filter;
pub mod keymap;

pub use filter::{Filter, FilterSpec};
pub use keymap::{CommandFate, KeyMap, Transaction};
