//! The RDB format: reader (zero-copy over `&[u8]`) and encoder.
//!
//! Source stage of the pipeline. See `../shared/docs/FORMATS.md` for the byte layouts.

pub mod crc;
pub mod cursor;
pub mod error;

pub use error::{DecodeError, Error, ErrorKind};
