//! Redis Cluster building blocks: key slots, the slot map, redirections.
//!
//! Where it sits: beside `sink/`. The import writer and `verify` use it to send each key to the
//! master that owns its slot, and to follow `MOVED` / `ASK` replies while the cluster is
//! being resharded:
//!
//! - [`key_slot`]: CRC16 (XMODEM) of the key or of its hash tag, modulo 16384, exactly as
//!   Redis computes it (`src/cluster.c`, `keyHashSlot`);
//! - [`tmp_key_for`]: a temporary key name in the same slot as a key (the rewrite path builds
//!   a key under it, then renames it into place, which Cluster allows only within a slot);
//! - [`command_slot`]: the one slot of an AOF command's keys, or which keys disagree;
//! - [`SlotMap`]: the masters and the owner of each slot, from `CLUSTER SLOTS`;
//! - [`parse_redirect`]: `MOVED` and `ASK` error replies.
//!
//! Deliberately not here: connections and retries (the callers own their connections), and
//! replicas (reads and writes both go to masters).

mod map;
mod redirect;
mod slot;

pub use map::{NodeAddr, SlotMap, show_ranges};
pub use redirect::{Redirect, parse_redirect};
pub use slot::{CrossSlot, SLOTS, command_slot, crc16, key_slot, slot_tag, tmp_key_for};
