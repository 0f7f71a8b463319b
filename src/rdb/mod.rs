//! The RDB format: reader (zero-copy over `&[u8]`, pull-based) and encoder.
//!
//! Source stage of the pipeline. Layout per file: wire primitives in `cursor`, one file per
//! inner encoding (`ziplist`, `listpack`, `intset`, `zipmap`, `stream`, `module`), lazy value
//! views in `value`, the record decoder and its two drivers in `reader`. See
//! `../shared/docs/FORMATS.md` for the byte layouts. This module does not interpret module data
//! or run functions; it only finds where they end and hands them on raw.

pub mod crc;
pub mod cursor;
pub mod dump;
pub mod elem;
pub mod encoder;
pub mod error;
pub mod intset;
pub mod listpack;
pub mod module;
pub mod reader;
pub mod reencode;
pub mod spill;
pub mod stream;
pub mod types;
pub mod value;
pub mod ziplist;
pub mod zipmap;

pub use elem::Elem;
pub use error::{DecodeError, Error, ErrorKind};
pub use reader::{KeyRecord, RdbReader, ReadOptions, Record, StreamReader};
pub use types::{DataType, Dialect, Version};
pub use value::{Coll, Value};
