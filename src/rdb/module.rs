//! Module values (type 7) and MODULE_AUX records: skipped by their sub-opcodes, kept raw
//! (FORMATS §6). We never interpret a module's data; we only find where it ends.

use super::cursor::Cursor;
use super::error::DecodeResult;

const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A module type id: 9-character name and 10-bit encoding version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleId(pub u64);

impl ModuleId {
    /// The module type's 9-character name (e.g. `ReJSON-RL`).
    pub fn name(&self) -> String {
        let mut id = self.0 >> 10;
        let mut name = [0u8; 9];
        for i in (0..9).rev() {
            name[i] = CHARSET[(id & 63) as usize];
            id >>= 6;
        }
        String::from_utf8_lossy(&name).into_owned()
    }
    /// The encoding version the module wrote.
    pub fn encver(&self) -> u16 {
        (self.0 & 1023) as u16
    }
}

/// Skip opcode-tagged module data up to and including its EOF sub-opcode.
pub fn skip_module_data(c: &mut Cursor<'_>) -> DecodeResult<()> {
    loop {
        let start = c.offset();
        match c.length()? {
            0 => return Ok(()),
            1 | 2 => {
                c.length()?;
            }
            3 => c.skip(4, "module float")?,
            4 => c.skip(8, "module double")?,
            5 => {
                c.skip_string()?;
            }
            op => {
                return Err(super::error::DecodeError::invalid(
                    start,
                    format!("unknown module sub-opcode {op}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn name_round_trip() {
        // Encode "ReJSON-RL" with encver 3 the way Redis does.
        let mut id: u64 = 0;
        for ch in b"ReJSON-RL" {
            let idx = CHARSET.iter().position(|c| c == ch).unwrap() as u64;
            id = (id << 6) | idx;
        }
        let m = ModuleId((id << 10) | 3);
        assert_eq!(m.name(), "ReJSON-RL");
        assert_eq!(m.encver(), 3);
    }
}
