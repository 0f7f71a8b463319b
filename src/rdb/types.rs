//! Type ids, opcodes and dialects of the RDB format (FORMATS §1–§4).

use std::fmt;

/// Opcodes that can appear where a type byte is expected.
pub mod opcode {
    /// Valkey unstable: inline replication command (payload unknown).
    pub const UPDATE: u8 = 242;
    /// Valkey 9: slot-import state (payload unknown).
    pub const SLOT_IMPORT: u8 = 243;
    /// Redis 7.4 cluster slot sizing hint.
    pub const SLOT_INFO: u8 = 244;
    /// A function library (7.0+).
    pub const FUNCTION2: u8 = 245;
    /// Pre-GA function record (7.0-rc1/rc2).
    pub const FUNCTION_PRE_GA: u8 = 246;
    /// Module auxiliary data.
    pub const MODULE_AUX: u8 = 247;
    /// LRU idle seconds of the next key.
    pub const IDLE: u8 = 248;
    /// LFU counter of the next key.
    pub const FREQ: u8 = 249;
    /// Auxiliary field.
    pub const AUX: u8 = 250;
    /// Sizing hint of the current db.
    pub const RESIZEDB: u8 = 251;
    /// Expire time in ms of the next key.
    pub const EXPIRETIME_MS: u8 = 252;
    /// Expire time in seconds of the next key.
    pub const EXPIRETIME: u8 = 253;
    /// Switch database.
    pub const SELECTDB: u8 = 254;
    /// End of file.
    pub const EOF: u8 = 255;
}

/// Value type ids (FORMATS §4).
pub mod type_id {
    #![allow(missing_docs)]
    pub const STRING: u8 = 0;
    pub const LIST: u8 = 1;
    pub const SET: u8 = 2;
    pub const ZSET: u8 = 3;
    pub const HASH: u8 = 4;
    pub const ZSET_2: u8 = 5;
    pub const MODULE_PRE_GA: u8 = 6;
    pub const MODULE_2: u8 = 7;
    pub const HASH_ZIPMAP: u8 = 9;
    pub const LIST_ZIPLIST: u8 = 10;
    pub const SET_INTSET: u8 = 11;
    pub const ZSET_ZIPLIST: u8 = 12;
    pub const HASH_ZIPLIST: u8 = 13;
    pub const LIST_QUICKLIST: u8 = 14;
    pub const STREAM_LISTPACKS: u8 = 15;
    pub const HASH_LISTPACK: u8 = 16;
    pub const ZSET_LISTPACK: u8 = 17;
    pub const LIST_QUICKLIST_2: u8 = 18;
    pub const STREAM_LISTPACKS_2: u8 = 19;
    pub const SET_LISTPACK: u8 = 20;
    pub const STREAM_LISTPACKS_3: u8 = 21;
    pub const HASH_METADATA_PRE_GA: u8 = 22;
    pub const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
    pub const HASH_METADATA: u8 = 24;
    pub const HASH_LISTPACK_EX: u8 = 25;
    /// Valkey 9 (under a `VALKEY` header): hash with per-field expiry.
    pub const VALKEY_HASH_2: u8 = 22;
}

/// Which family of writers produced the file; decides the meaning of type bytes 22–25 and
/// opcodes 242–244 (FORMATS §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `REDIS0001`..`REDIS0012`.
    Redis,
    /// `VALKEY080`, `VALKEY081`.
    Valkey,
}

/// The file's format version: dialect and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Redis or Valkey.
    pub dialect: Dialect,
    /// The number in the header.
    pub number: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dialect {
            Dialect::Redis => write!(f, "v{}", self.number),
            Dialect::Valkey => write!(f, "Valkey v{}", self.number),
        }
    }
}

impl Version {
    /// The highest Redis RDB version we read.
    pub const REDIS_MAX: u32 = 12;

    /// Parse the 9-byte header. `None` when it is not an RDB header at all.
    pub fn parse_header(h: &[u8]) -> Result<Version, String> {
        if h.len() < 9 {
            return Err(format!("{:?}", String::from_utf8_lossy(h)));
        }
        let digits = |d: &[u8]| -> Option<u32> {
            if d.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(d).ok()?.parse().ok()
            } else {
                None
            }
        };
        if &h[..5] == b"REDIS" {
            return match digits(&h[5..9]) {
                Some(n) => Ok(Version {
                    dialect: Dialect::Redis,
                    number: n,
                }),
                None => Err(format!("{:?}", String::from_utf8_lossy(&h[..9]))),
            };
        }
        if &h[..6] == b"VALKEY" {
            return match digits(&h[6..9]) {
                Some(n) => Ok(Version {
                    dialect: Dialect::Valkey,
                    number: n,
                }),
                None => Err(format!("{:?}", String::from_utf8_lossy(&h[..9]))),
            };
        }
        Err(format!("{:?}", String::from_utf8_lossy(&h[..9])))
    }

    /// Whether a release of Redis or Valkey writes this version.
    pub fn is_supported(&self) -> bool {
        match self.dialect {
            Dialect::Redis => (1..=Self::REDIS_MAX).contains(&self.number),
            Dialect::Valkey => (80..=81).contains(&self.number),
        }
    }

    /// Whether the file ends with an 8-byte CRC-64 after EOF.
    pub fn has_checksum(&self) -> bool {
        self.dialect == Dialect::Valkey || self.number >= 5
    }

    /// The equivalent Redis RDB version for feature checks (Valkey 9 ⊇ Redis 11).
    pub fn redis_equivalent(&self) -> u32 {
        match self.dialect {
            Dialect::Redis => self.number,
            Dialect::Valkey => 11,
        }
    }

    /// Whether `t` is a value type this version's loader accepts.
    pub fn accepts_type(&self, t: u8) -> bool {
        use type_id::*;
        match t {
            STRING..=HASH => true,
            ZSET_2 | MODULE_PRE_GA | MODULE_2 => true,
            HASH_ZIPMAP..=STREAM_LISTPACKS_3 => true,
            22 => true,
            HASH_LISTPACK_EX_PRE_GA | HASH_METADATA | HASH_LISTPACK_EX => {
                self.dialect == Dialect::Redis
            }
            _ => false,
        }
    }
}

/// The Redis data type of a value, as `TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// string
    String,
    /// list
    List,
    /// set
    Set,
    /// zset
    ZSet,
    /// hash
    Hash,
    /// stream
    Stream,
    /// module value
    Module,
}

impl DataType {
    /// The name `TYPE` replies with (`module` for module values).
    pub fn name(&self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::List => "list",
            DataType::Set => "set",
            DataType::ZSet => "zset",
            DataType::Hash => "hash",
            DataType::Stream => "stream",
            DataType::Module => "module",
        }
    }

    /// Parse a type name as users write it in `--type`.
    pub fn from_name(s: &str) -> Option<DataType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "string" | "str" => DataType::String,
            "list" => DataType::List,
            "set" => DataType::Set,
            "zset" | "sortedset" => DataType::ZSet,
            "hash" => DataType::Hash,
            "stream" => DataType::Stream,
            "module" => DataType::Module,
            _ => return None,
        })
    }

    /// The data type of a type id (the caller has checked the id is known).
    pub fn of(t: u8) -> DataType {
        use type_id::*;
        match t {
            STRING => DataType::String,
            LIST | LIST_ZIPLIST | LIST_QUICKLIST | LIST_QUICKLIST_2 => DataType::List,
            SET | SET_INTSET | SET_LISTPACK => DataType::Set,
            ZSET | ZSET_2 | ZSET_ZIPLIST | ZSET_LISTPACK => DataType::ZSet,
            STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => DataType::Stream,
            MODULE_PRE_GA | MODULE_2 => DataType::Module,
            _ => DataType::Hash,
        }
    }
}

/// The encoding name of a type id, as this file stores it (close to `OBJECT ENCODING`).
pub fn encoding_name(t: u8) -> &'static str {
    use type_id::*;
    match t {
        STRING => "string",
        LIST => "linkedlist",
        SET | HASH => "hashtable",
        ZSET | ZSET_2 => "skiplist",
        MODULE_PRE_GA | MODULE_2 => "module",
        HASH_ZIPMAP => "zipmap",
        LIST_ZIPLIST | ZSET_ZIPLIST | HASH_ZIPLIST => "ziplist",
        SET_INTSET => "intset",
        LIST_QUICKLIST => "quicklist",
        LIST_QUICKLIST_2 => "quicklist2",
        STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => "listpacks",
        HASH_LISTPACK | ZSET_LISTPACK | SET_LISTPACK => "listpack",
        22 | HASH_METADATA => "hashtable-ex",
        HASH_LISTPACK_EX_PRE_GA | HASH_LISTPACK_EX => "listpack-ex",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn headers() {
        let v = Version::parse_header(b"REDIS0011").unwrap();
        assert_eq!((v.dialect, v.number), (Dialect::Redis, 11));
        let v = Version::parse_header(b"VALKEY080").unwrap();
        assert_eq!((v.dialect, v.number), (Dialect::Valkey, 80));
        assert!(Version::parse_header(b"REDIS00x1").is_err());
        assert!(Version::parse_header(b"RDB000011").is_err());
        assert!(!Version::parse_header(b"REDIS0013").unwrap().is_supported());
        assert!(!Version::parse_header(b"REDIS0000").unwrap().is_supported());
    }
}
