//! The middle of the pipeline: decide which entries go on, and under which name and db.
//!
//! Filters are shared by every command (`check`, `inspect`, `convert`, later `import`). This
//! stage never decodes values; it looks at db, key and type only.

pub mod filter;

pub use filter::{Filter, FilterSpec};
