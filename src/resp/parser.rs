//! RESP decoding: command arrays (zero-copy) and server replies (owned).
//!
//! Both parsers are incremental in the mini-redis "check, then parse" sense: given the bytes
//! buffered so far they return `Ok(None)` when no whole item is there yet (the caller reads
//! more and calls again with the grown buffer), the item and the bytes it took otherwise. They
//! keep no state between calls, so a caller may hand them a memory-mapped file as well as a
//! socket buffer.
//!
//! Every length read from the input is untrusted: it is checked against a cap
//! ([`MAX_BULK_LEN`], [`MAX_ARGC`]) and never used to size an allocation beyond what the bytes
//! already buffered could hold.
//!
//! Not here: inline commands (`PING\r\n`), which neither AOF files nor replication streams
//! contain, and RESP3 streamed strings/aggregates (`$?`), which servers only send to clients
//! that ask for them.

use super::error::{RespError, RespErrorKind};

/// Largest bulk string accepted: 4 GiB. Redis caps at `proto-max-bulk-len` (512 MiB by
/// default, configurable), so this is above anything a server accepts yet still rejects the
/// garbage lengths a corrupt file produces.
pub const MAX_BULK_LEN: u64 = 4 << 30;

/// Largest argument count accepted: 2^31 (Redis rejects multibulk lengths above `INT_MAX`).
pub const MAX_ARGC: u64 = 1 << 31;

/// Largest aggregate (array, set, map) size accepted in a reply.
pub const MAX_AGGREGATE_LEN: u64 = 1 << 31;

/// Longest length line (`*<n>`, `$<n>`, `:<n>`): a sign and 20 digits fit with room to spare.
/// Without this cap, a buffer of garbage with no CRLF would be "incomplete" forever.
const MAX_NUMBER_LINE: usize = 32;

/// Longest simple-string, error, double or big-number line in a reply (64 KiB, Redis's
/// `PROTO_INLINE_MAX_SIZE`).
pub const MAX_SIMPLE_LINE: usize = 64 << 10;

/// Deepest nesting of aggregates in a reply. Real replies nest a handful of levels
/// (`XINFO STREAM FULL`, `COMMAND DOCS`); the cap keeps hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 128;

/// The smallest encoding of one command argument, `$0\r\n\r\n`.
const MIN_ARG_BYTES: usize = 6;
/// The smallest encoding of one reply element, `_\r\n`.
const MIN_REPLY_BYTES: usize = 3;
/// What an element costs in memory besides its bytes, counted against a reply's cap (see
/// [`ReplyDecoder`]).
pub const ELEMENT_COST: usize = std::mem::size_of::<Reply>();

type Parsed<T> = Result<Option<T>, RespError>;

fn err(offset: usize, kind: RespErrorKind) -> RespError {
    RespError::new(offset as u64, kind)
}

/// Reads the CRLF-terminated line whose first byte is at `start`. Returns the line without its
/// CRLF and the position after it, `None` if the CRLF is not buffered yet.
fn read_line<'a>(
    buf: &'a [u8],
    start: usize,
    max: usize,
    what: &'static str,
) -> Parsed<(&'a [u8], usize)> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(max.saturating_add(1))];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) => {
            if window[i] == b'\n' {
                return Err(err(start + i, RespErrorKind::MissingCrlf { after: what }));
            }
            match rest.get(i + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some((&rest[..i], start + i + 2))),
                Some(_) => Err(err(start + i, RespErrorKind::MissingCrlf { after: what })),
            }
        }
        None if window.len() > max => Err(err(start, RespErrorKind::LineTooLong { what, max })),
        None => Ok(None),
    }
}

fn lossy(text: &[u8]) -> String {
    String::from_utf8_lossy(&text[..text.len().min(32)]).into_owned()
}

/// Parses a signed decimal as Redis writes it: optional `-`, then digits, nothing else.
fn parse_int(text: &[u8], offset: usize, what: &'static str) -> Result<i64, RespError> {
    let bad = || {
        err(
            offset,
            RespErrorKind::BadInteger {
                what,
                text: lossy(text),
            },
        )
    };
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        let d = i64::from(d - b'0');
        // Accumulate negatively so that i64::MIN parses too.
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_sub(d))
            .ok_or_else(bad)?;
    }
    if neg {
        Ok(v)
    } else {
        v.checked_neg().ok_or_else(bad)
    }
}

/// Parses a length line into `0..=max`; `-1` (null) is returned as `None` when `allow_null`.
fn parse_len(
    text: &[u8],
    offset: usize,
    what: &'static str,
    max: u64,
    allow_null: bool,
) -> Result<Option<u64>, RespError> {
    let v = parse_int(text, offset, what)?;
    if v == -1 && allow_null {
        return Ok(None);
    }
    match u64::try_from(v) {
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(err(
            offset,
            RespErrorKind::LengthOutOfRange {
                what,
                value: v,
                max,
            },
        )),
    }
}

/// Reads a bulk payload of `len` bytes at `start` plus its CRLF.
fn read_bulk(buf: &[u8], start: usize, len: u64) -> Parsed<(&[u8], usize)> {
    // A length that does not fit in usize (32-bit targets) cannot be buffered: out of range.
    let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
        return Err(err(
            start,
            RespErrorKind::LengthOutOfRange {
                what: "bulk length",
                value: i64::try_from(len).unwrap_or(i64::MAX),
                max: usize::MAX as u64,
            },
        ));
    };
    let Some(crlf) = buf.get(end..end.saturating_add(2)).filter(|s| s.len() == 2) else {
        return Ok(None);
    };
    if crlf != b"\r\n" {
        return Err(err(
            end,
            RespErrorKind::MissingCrlf {
                after: "bulk string",
            },
        ));
    }
    Ok(buf.get(start..end).map(|data| (data, end + 2)))
}

/// Parses one command, a RESP array of bulk strings (`*<argc>\r\n` then `$<len>\r\n<bytes>\r\n`
/// per argument), from the start of `buf`.
///
/// On success `args` holds the arguments, borrowed from `buf`, and the result is the number of
/// bytes the command took. `Ok(None)` means `buf` ends before the command does: read more and
/// call again. `args` is cleared first, and left empty unless a whole command was parsed.
/// `*0\r\n` parses as a command with no arguments; whether that is acceptable is the caller's
/// business. Error offsets are relative to `buf`.
///
/// ```
/// use rdbferry::resp::parse_command;
///
/// let buf = b"*2\r\n$6\r\nSELECT\r\n$1\r\n5\r\n*1\r\n$4\r\nPI";
/// let mut args = Vec::new();
/// assert_eq!(parse_command(buf, &mut args)?, Some(23));
/// assert_eq!(args, [&b"SELECT"[..], b"5"]);
/// assert_eq!(parse_command(&buf[23..], &mut args)?, None); // read more
/// # Ok::<(), rdbferry::resp::RespError>(())
/// ```
pub fn parse_command<'a>(buf: &'a [u8], args: &mut Vec<&'a [u8]>) -> Parsed<usize> {
    args.clear();
    let res = command(buf, args);
    if !matches!(res, Ok(Some(_))) {
        args.clear();
    }
    res
}

fn command<'a>(buf: &'a [u8], args: &mut Vec<&'a [u8]>) -> Parsed<usize> {
    match buf.first() {
        None => return Ok(None),
        Some(b'*') => {}
        Some(&found) => {
            return Err(err(
                0,
                RespErrorKind::UnexpectedByte {
                    expected: "'*' (command array)",
                    found,
                },
            ));
        }
    }
    let Some((line, mut pos)) = read_line(buf, 1, MAX_NUMBER_LINE, "argument count")? else {
        return Ok(None);
    };
    let argc = parse_len(line, 1, "argument count", MAX_ARGC, false)?.unwrap_or_default();
    // Never trust argc for an allocation: reserve only what the buffered bytes could hold.
    let fits = buf.len().saturating_sub(pos) / MIN_ARG_BYTES;
    args.reserve(usize::try_from(argc).unwrap_or(usize::MAX).min(fits));
    for _ in 0..argc {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&found) => {
                return Err(err(
                    pos,
                    RespErrorKind::UnexpectedByte {
                        expected: "'$' (bulk string argument)",
                        found,
                    },
                ));
            }
        }
        let Some((line, start)) = read_line(buf, pos + 1, MAX_NUMBER_LINE, "bulk length")? else {
            return Ok(None);
        };
        let len = parse_len(line, pos + 1, "bulk length", MAX_BULK_LEN, false)?.unwrap_or_default();
        let Some((arg, next)) = read_bulk(buf, start, len)? else {
            return Ok(None);
        };
        args.push(arg);
        pos = next;
    }
    Ok(Some(pos))
}

/// A server reply, owned.
///
/// RESP3 types are folded into the closest RESP2 shape where a separate variant would buy
/// nothing for a data mover: sets (`~`) and pushes (`>`) become [`Reply::Array`], blob errors
/// (`!`) [`Reply::Error`], verbatim strings (`=`) [`Reply::Bulk`] without their `txt:` prefix,
/// big numbers (`(`) [`Reply::Bulk`] holding the digits. Attributes (`|`) are parsed and
/// dropped; the reply they annotate is returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`: a status line.
    Simple(Vec<u8>),
    /// `-ERR ...` (or RESP3 `!`): an error reply.
    Error(Vec<u8>),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`.
    Bulk(Vec<u8>),
    /// `$-1`, `*-1`, RESP3 `_`.
    Nil,
    /// `*`, RESP3 `~` and `>`.
    Array(Vec<Reply>),
    /// RESP3 `%`: key/value pairs in the order sent.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `,`: `inf`, `-inf`, `nan` included.
    Double(f64),
}

/// Whether an error reply's text says the server does not know the command (an older server,
/// or a command renamed away).
pub fn unknown_command(e: &str) -> bool {
    e.to_ascii_lowercase().contains("unknown command")
}

impl Reply {
    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The text of an error reply (`None` for any other reply).
    pub fn error_text(&self) -> Option<String> {
        match self {
            Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        }
    }

    /// The bytes of a status line or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(b) | Reply::Bulk(b) => Some(b),
            _ => None,
        }
    }
}

/// Parses one reply from the start of `buf`: RESP2 (`+ - : $ *`) and RESP3
/// (`_ , # ( = ! ~ % > |`, see [`Reply`]).
///
/// Returns the reply and the bytes it took, or `Ok(None)` if `buf` ends before it does.
/// Error offsets are relative to `buf`. This is [`ReplyDecoder`] used once: a caller that
/// reads a reply from a socket keeps a decoder instead, so that bytes are parsed only once.
///
/// ```
/// use rdbferry::resp::{parse_reply, Reply};
///
/// let (reply, used) = parse_reply(b"+FULLRESYNC 8de1 0\r\n$40\r\n")?.unwrap();
/// assert_eq!(reply, Reply::Simple(b"FULLRESYNC 8de1 0".to_vec()));
/// assert_eq!(used, 20);
/// assert_eq!(parse_reply(b"*2\r\n:1\r\n")?, None);
/// # Ok::<(), rdbferry::resp::RespError>(())
/// ```
pub fn parse_reply(buf: &[u8]) -> Parsed<(Reply, usize)> {
    let mut d = ReplyDecoder::new(u64::MAX);
    match d.decode(buf)? {
        (used, Decoded::Reply(r)) => Ok(Some((r, used))),
        (_, Decoded::Incomplete { .. }) => Ok(None),
    }
}

/// What [`ReplyDecoder::decode`] got to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A whole reply.
    Reply(Reply),
    /// The bytes end inside a reply: append more (after the unconsumed ones) and call again.
    /// `need`: how many bytes, counted from the first unconsumed one, the next element takes
    /// when that is known (a bulk string whose header was read), else 0.
    Incomplete {
        /// Bytes the next element needs, or 0.
        need: usize,
    },
}

/// An aggregate being filled.
#[derive(Debug)]
enum Frame {
    /// `*`, `~`, `>`: `left` elements still to come.
    Array { items: Vec<Reply>, left: usize },
    /// `%`, or `|` (an attribute, dropped once whole): `left` keys and values still to come.
    Map {
        pairs: Vec<(Reply, Reply)>,
        key: Option<Reply>,
        left: usize,
        attribute: bool,
    },
}

/// An incremental reply parser: the aggregates a reply has opened so far stay with the
/// decoder between calls, so a caller that reads a socket in pieces parses each byte once
/// (re-parsing a growing buffer from the start made a big array quadratic). Only a bulk
/// string is taken whole, once all its bytes are there ([`Decoded::Incomplete`] says how many).
///
/// `cap` bounds the bytes of one reply (headers included), and the memory it takes: each
/// element also counts the [`Reply`] that holds it ([`ELEMENT_COST`]), since `:1` (4 bytes)
/// takes 32 once parsed. A longer reply is an error before its bytes are buffered, and an
/// aggregate whose announced length cannot fit is one at its header, so a caller's memory
/// stays bounded by what the command can legitimately return (a small cap for `INFO` or
/// `CONFIG GET`, a value's size for `DUMP`).
///
/// ```
/// use rdbferry::resp::{Decoded, Reply, ReplyDecoder};
///
/// let mut d = ReplyDecoder::new(1 << 20);
/// let (used, got) = d.decode(b"*2\r\n:1\r\n$3\r\nab")?;
/// assert_eq!((used, got), (8, Decoded::Incomplete { need: 9 }));
/// let (used, got) = d.decode(b"$3\r\nabc\r\n")?;
/// assert_eq!(used, 9);
/// assert_eq!(got, Decoded::Reply(Reply::Array(vec![Reply::Integer(1), Reply::Bulk(b"abc".to_vec())])));
/// # Ok::<(), rdbferry::resp::RespError>(())
/// ```
#[derive(Debug)]
pub struct ReplyDecoder {
    stack: Vec<Frame>,
    /// Bytes of the reply in progress consumed so far.
    taken: u64,
    cap: u64,
}

impl ReplyDecoder {
    /// A decoder whose replies may take at most `cap` bytes each.
    pub fn new(cap: u64) -> ReplyDecoder {
        ReplyDecoder {
            stack: Vec::new(),
            taken: 0,
            cap,
        }
    }

    /// The cap for the next reply; ignored while one is under way.
    pub fn set_cap(&mut self, cap: u64) {
        if self.is_idle() {
            self.cap = cap;
        }
    }

    /// Whether no reply is under way.
    pub fn is_idle(&self) -> bool {
        self.stack.is_empty() && self.taken == 0
    }

    /// Forget a reply under way (after its connection failed).
    pub fn reset(&mut self) {
        self.stack.clear();
        self.taken = 0;
    }

    /// Parse from `buf` (the bytes after those consumed by earlier calls): returns the bytes
    /// consumed, and the reply once it is whole. Error offsets are relative to `buf`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<(usize, Decoded), RespError> {
        let mut pos = 0;
        loop {
            let Some((value, next)) = self.element(buf, pos)? else {
                let need = self.bulk_need(buf, pos)?.unwrap_or_default();
                return Ok((pos, Decoded::Incomplete { need }));
            };
            self.take(next - pos + ELEMENT_COST, pos)?;
            pos = next;
            if let Some(v) = value
                && let Some(reply) = self.attach(v)
            {
                self.taken = 0;
                return Ok((pos, Decoded::Reply(reply)));
            }
        }
    }

    /// Count `n` bytes of the reply against the cap.
    fn take(&mut self, n: usize, at: usize) -> Result<(), RespError> {
        self.taken = self.taken.saturating_add(n as u64);
        if self.taken > self.cap {
            return Err(err(at, RespErrorKind::ReplyTooLong(self.cap)));
        }
        Ok(())
    }

    /// For a bulk string whose header is buffered but not its bytes: the bytes it takes from
    /// `pos`, once checked against the cap.
    fn bulk_need(&self, buf: &[u8], pos: usize) -> Result<Option<usize>, RespError> {
        if !matches!(buf.get(pos), Some(b'$' | b'!' | b'=')) {
            return Ok(None);
        }
        let Some((line, next)) = read_line(buf, pos + 1, MAX_NUMBER_LINE, "bulk length")? else {
            return Ok(None);
        };
        let Some(len) = parse_len(line, pos + 1, "bulk length", MAX_BULK_LEN, true)? else {
            return Ok(None);
        };
        let need = (next - pos) as u64 + len + 2;
        if self.taken.saturating_add(need) > self.cap {
            return Err(err(pos, RespErrorKind::ReplyTooLong(self.cap)));
        }
        Ok(usize::try_from(need).ok())
    }

    /// Add a whole element to the aggregate under way; the reply, when that completes it.
    fn attach(&mut self, mut v: Reply) -> Option<Reply> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Some(v);
            };
            let done = match top {
                Frame::Array { items, left } => {
                    items.push(v);
                    *left -= 1;
                    *left == 0
                }
                Frame::Map {
                    pairs, key, left, ..
                } => {
                    match key.take() {
                        None => *key = Some(v),
                        Some(k) => {
                            pairs.push((k, v));
                            *left -= 1;
                        }
                    }
                    *left == 0
                }
            };
            if !done {
                return None;
            }
            v = match self.stack.pop() {
                Some(Frame::Array { items, .. }) => Reply::Array(items),
                Some(Frame::Map {
                    attribute: true, ..
                }) => return None, // an attribute annotates the element that follows it
                Some(Frame::Map { pairs, .. }) => Reply::Map(pairs),
                None => return None,
            };
        }
    }

    /// Parse one element at `pos`: a whole scalar (`Some(reply)`), or the header of a
    /// non-empty aggregate, pushed on the stack (`None`); and the position after it.
    /// `Ok(None)`: not all of it is buffered (nothing was consumed).
    fn element(&mut self, buf: &[u8], pos: usize) -> Parsed<(Option<Reply>, usize)> {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let (line_max, what) = match kind {
            b'+' | b'-' | b',' | b'(' => (MAX_SIMPLE_LINE, "simple string"),
            b':' => (MAX_NUMBER_LINE, "integer"),
            b'$' | b'!' | b'=' => (MAX_NUMBER_LINE, "bulk length"),
            b'*' | b'~' | b'>' | b'%' | b'|' => (MAX_NUMBER_LINE, "aggregate length"),
            b'_' | b'#' => (MAX_NUMBER_LINE, "RESP3 null or boolean"),
            found => {
                return Err(err(
                    pos,
                    RespErrorKind::UnexpectedByte {
                        expected: "a RESP type byte",
                        found,
                    },
                ));
            }
        };
        let Some((line, next)) = read_line(buf, pos + 1, line_max, what)? else {
            return Ok(None);
        };
        let at = pos + 1;
        let reply = match kind {
            b'+' => Reply::Simple(line.to_vec()),
            b'-' => Reply::Error(line.to_vec()),
            b'(' => Reply::Bulk(line.to_vec()),
            b':' => Reply::Integer(parse_int(line, at, "integer")?),
            b'_' if line.is_empty() => Reply::Nil,
            b'#' if line == b"t" => Reply::Boolean(true),
            b'#' if line == b"f" => Reply::Boolean(false),
            b'_' | b'#' => return Err(err(at, RespErrorKind::BadLiteral(lossy(line)))),
            b',' => {
                let text = std::str::from_utf8(line).ok();
                match text.and_then(|t| t.parse::<f64>().ok()) {
                    Some(d) => Reply::Double(d),
                    None => return Err(err(at, RespErrorKind::BadDouble(lossy(line)))),
                }
            }
            b'$' | b'!' | b'=' => {
                let Some(len) = parse_len(line, at, "bulk length", MAX_BULK_LEN, kind == b'$')?
                else {
                    return Ok(Some((Some(Reply::Nil), next)));
                };
                if self.taken.saturating_add((next - pos) as u64 + len) > self.cap {
                    return Err(err(pos, RespErrorKind::ReplyTooLong(self.cap)));
                }
                let Some((data, end)) = read_bulk(buf, next, len)? else {
                    return Ok(None);
                };
                let reply = match kind {
                    b'!' => Reply::Error(data.to_vec()),
                    // Verbatim strings start with a 3-byte format and ':' (`txt:`, `mkd:`).
                    b'=' => Reply::Bulk(
                        data.get(4..)
                            .filter(|_| data.get(3) == Some(&b':'))
                            .unwrap_or(data)
                            .to_vec(),
                    ),
                    _ => Reply::Bulk(data.to_vec()),
                };
                return Ok(Some((Some(reply), end)));
            }
            _ => {
                let allow_null = kind == b'*';
                let Some(n) =
                    parse_len(line, at, "aggregate length", MAX_AGGREGATE_LEN, allow_null)?
                else {
                    return Ok(Some((Some(Reply::Nil), next)));
                };
                let map = kind == b'%' || kind == b'|';
                // An endless `*2147483647` is refused here, not after gigabytes of `:1`.
                let least = n
                    .saturating_mul((MIN_REPLY_BYTES + ELEMENT_COST) as u64)
                    .saturating_mul(if map { 2 } else { 1 });
                if self.taken.saturating_add((next - pos) as u64 + least) > self.cap {
                    return Err(err(pos, RespErrorKind::ReplyTooLong(self.cap)));
                }
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n == 0 {
                    return Ok(Some((
                        match kind {
                            b'|' => None,
                            b'%' => Some(Reply::Map(Vec::new())),
                            _ => Some(Reply::Array(Vec::new())),
                        },
                        next,
                    )));
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(err(pos, RespErrorKind::TooDeep(MAX_DEPTH)));
                }
                // Never reserve more than the buffered bytes could hold (a hostile length).
                let fits = buf.len().saturating_sub(next) / MIN_REPLY_BYTES;
                self.stack.push(if map {
                    Frame::Map {
                        pairs: Vec::with_capacity(n.min(fits / 2)),
                        key: None,
                        left: n,
                        attribute: kind == b'|',
                    }
                } else {
                    Frame::Array {
                        items: Vec::with_capacity(n.min(fits)),
                        left: n,
                    }
                });
                return Ok(Some((None, next)));
            }
        };
        Ok(Some((Some(reply), next)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::writer::write_command;

    /// A small deterministic generator (xorshift64*), so failures reproduce without a seed file.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_args(rng: &mut Rng) -> Vec<Vec<u8>> {
        let argc = 1 + rng.below(6) as usize;
        (0..argc)
            .map(|_| {
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(4) as usize,
                    2 => rng.below(40) as usize,
                    _ => rng.below(300) as usize,
                };
                // Bias towards the bytes that matter to the framing.
                (0..len)
                    .map(|_| match rng.below(6) {
                        0 => b'\r',
                        1 => b'\n',
                        2 => b'$',
                        3 => b'*',
                        _ => rng.next() as u8,
                    })
                    .collect()
            })
            .collect()
    }

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let mut out = Vec::new();
        write_command(&mut out, &refs);
        out
    }

    #[test]
    fn round_trip_random_commands() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let cmd = random_args(&mut rng);
            let buf = encode(&cmd);
            let mut args = Vec::new();
            assert_eq!(parse_command(&buf, &mut args), Ok(Some(buf.len())));
            assert_eq!(args, cmd);
        }
    }

    #[test]
    fn round_trip_edge_arguments() {
        let cmds: [&[&[u8]]; 4] = [
            &[b"SET", b"", b""],
            &[b"SET", b"k\r\n", b"\r\n\r\n"],
            &[b"\x00\xff\xfe", b"*1\r\n$1\r\n"],
            &[b"PING"],
        ];
        for cmd in cmds {
            let mut buf = Vec::new();
            write_command(&mut buf, cmd);
            let mut args = Vec::new();
            assert_eq!(parse_command(&buf, &mut args), Ok(Some(buf.len())));
            assert_eq!(args, cmd);
        }
    }

    #[test]
    fn split_at_every_byte_is_incomplete_then_whole() {
        let mut rng = Rng(42);
        for _ in 0..50 {
            let cmd = random_args(&mut rng);
            let mut buf = encode(&cmd);
            let len = buf.len();
            for cut in 0..len {
                let mut args = vec![&b"stale"[..]];
                assert_eq!(
                    parse_command(&buf[..cut], &mut args),
                    Ok(None),
                    "cut at {cut}"
                );
                assert!(args.is_empty());
            }
            let mut args = Vec::new();
            // Bytes of the next command after the end are not consumed.
            buf.extend_from_slice(b"*1\r\n$4\r\nPI");
            assert_eq!(parse_command(&buf, &mut args), Ok(Some(len)));
            assert_eq!(args, cmd);
        }
    }

    #[test]
    fn zero_arguments() {
        let mut args = vec![&b"stale"[..]];
        assert_eq!(parse_command(b"*0\r\n", &mut args), Ok(Some(4)));
        assert!(args.is_empty());
    }

    fn command_err(buf: &[u8]) -> RespError {
        let mut args = Vec::new();
        match parse_command(buf, &mut args) {
            Err(e) => {
                assert!(args.is_empty());
                e
            }
            other => panic!("{buf:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_commands_are_errors_with_offsets() {
        let cases: &[(&[u8], u64)] = &[
            (b"PING\r\n", 0),
            (b"#TS:1\r\n", 0),
            (b"*x\r\n", 1),
            (b"*\r\n", 1),
            (b"*-1\r\n", 1),
            (b"*+1\r\n", 1),
            (b"*2147483649\r\n", 1),
            (b"*99999999999999999999999\r\n", 1),
            (b"*1\n$1\r\na\r\n", 2),
            (b"*1\rX", 2),
            (b"*1\r\n:1\r\n", 4),
            (b"*1\r\n$-1\r\n", 5),
            (b"*1\r\n$4294967297\r\n", 5),
            (b"*1\r\n$1\r\nab\r\n", 9),
            (b"*1\r\n$1\r\na\n\r", 9),
            (b"*2\r\n$1\r\na\r\n+OK\r\n", 11),
            (b"*111111111111111111111111111111111111", 1),
        ];
        for &(buf, offset) in cases {
            let e = command_err(buf);
            assert_eq!(e.offset, offset, "{buf:?}: {e}");
        }
    }

    #[test]
    fn error_message_names_offset() {
        let e = command_err(b"*1\r\n$1\r\nab\r\n");
        assert_eq!(e.to_string(), "missing CRLF after bulk string at byte 9");
        assert_eq!(e.rebase(100).offset, 109);
    }

    #[test]
    fn huge_argc_does_not_allocate_up_front() {
        let mut args = Vec::new();
        assert_eq!(
            parse_command(b"*2147483648\r\n$1\r\na\r\n", &mut args),
            Ok(None)
        );
        assert!(args.capacity() < 16);
    }

    #[test]
    fn corrupted_commands_never_panic() {
        let mut rng = Rng(7);
        for _ in 0..3000 {
            let mut args = Vec::new();
            let mut buf = encode(&random_args(&mut rng));
            for _ in 0..=rng.below(3) {
                let i = rng.below(buf.len() as u64) as usize;
                buf[i] = rng.next() as u8;
            }
            let cut = rng.below(buf.len() as u64 + 1) as usize;
            if let Ok(Some(n)) = parse_command(&buf[..cut], &mut args) {
                assert!(n <= cut);
            }
            let _ = parse_reply(&buf[..cut]);
        }
    }

    fn reply(buf: &[u8]) -> Reply {
        match parse_reply(buf) {
            Ok(Some((r, n))) => {
                assert_eq!(n, buf.len(), "{buf:?}");
                for cut in 0..buf.len() {
                    assert_eq!(parse_reply(&buf[..cut]), Ok(None), "{buf:?} cut at {cut}");
                }
                r
            }
            other => panic!("{buf:?}: {other:?}"),
        }
    }

    #[test]
    fn resp2_replies() {
        assert_eq!(reply(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(reply(b"-ERR no\r\n"), Reply::Error(b"ERR no".to_vec()));
        assert!(reply(b"-NOAUTH x\r\n").is_error());
        assert_eq!(
            reply(b":-9223372036854775808\r\n"),
            Reply::Integer(i64::MIN)
        );
        assert_eq!(reply(b":9223372036854775807\r\n"), Reply::Integer(i64::MAX));
        assert_eq!(reply(b"$0\r\n\r\n"), Reply::Bulk(vec![]));
        assert_eq!(reply(b"$4\r\na\r\nb\r\n").as_bytes(), Some(&b"a\r\nb"[..]));
        assert_eq!(reply(b"$-1\r\n"), Reply::Nil);
        assert_eq!(reply(b"*-1\r\n"), Reply::Nil);
        assert_eq!(reply(b"*0\r\n"), Reply::Array(vec![]));
        assert_eq!(
            reply(b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n"),
            Reply::Array(vec![
                Reply::Integer(1),
                Reply::Array(vec![Reply::Bulk(b"x".to_vec())]),
                Reply::Nil
            ])
        );
    }

    #[test]
    fn resp3_replies() {
        assert_eq!(reply(b"_\r\n"), Reply::Nil);
        assert_eq!(reply(b"#t\r\n"), Reply::Boolean(true));
        assert_eq!(reply(b"#f\r\n"), Reply::Boolean(false));
        assert_eq!(reply(b",1.5\r\n"), Reply::Double(1.5));
        assert_eq!(reply(b",-inf\r\n"), Reply::Double(f64::NEG_INFINITY));
        assert!(matches!(reply(b",nan\r\n"), Reply::Double(d) if d.is_nan()));
        assert_eq!(
            reply(b"(12345678901234567890\r\n"),
            Reply::Bulk(b"12345678901234567890".to_vec())
        );
        assert_eq!(reply(b"!3\r\nERR\r\n"), Reply::Error(b"ERR".to_vec()));
        assert_eq!(reply(b"=8\r\ntxt:abcd\r\n"), Reply::Bulk(b"abcd".to_vec()));
        assert_eq!(
            reply(b"~2\r\n+a\r\n:2\r\n"),
            Reply::Array(vec![Reply::Simple(b"a".to_vec()), Reply::Integer(2)])
        );
        assert_eq!(
            reply(b"%1\r\n+k\r\n%0\r\n"),
            Reply::Map(vec![(Reply::Simple(b"k".to_vec()), Reply::Map(vec![]))])
        );
        assert_eq!(
            reply(b">1\r\n+m\r\n"),
            Reply::Array(vec![Reply::Simple(b"m".to_vec())])
        );
        assert_eq!(reply(b"|1\r\n+ttl\r\n:3\r\n:7\r\n"), Reply::Integer(7));
    }

    /// Feed `buf` to one decoder in pieces of `step` bytes, as a socket would deliver it.
    fn decode_in_pieces(buf: &[u8], step: usize, cap: u64) -> Result<Vec<Reply>, RespError> {
        let mut d = ReplyDecoder::new(cap);
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in buf.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let (used, got) = d.decode(&pending)?;
                pending.drain(..used);
                match got {
                    Decoded::Reply(r) => out.push(r),
                    Decoded::Incomplete { .. } => break,
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn decoder_resumes_where_it_stopped() {
        let buf: &[u8] =
            b"*3\r\n:1\r\n%1\r\n+k\r\n$5\r\nvalue\r\n*2\r\n|1\r\n+a\r\n+b\r\n,1.5\r\n_\r\n+OK\r\n";
        let whole = decode_in_pieces(buf, buf.len(), u64::MAX).unwrap();
        assert_eq!(whole.len(), 2);
        for step in 1..buf.len() {
            assert_eq!(
                decode_in_pieces(buf, step, u64::MAX).unwrap(),
                whole,
                "step {step}"
            );
        }
        // A big array of small integers, in socket-sized pieces: every element parsed once.
        let n = 200_000;
        let mut big = format!("*{n}\r\n").into_bytes();
        for i in 0..n {
            big.extend_from_slice(format!(":{i}\r\n").as_bytes());
        }
        let r = decode_in_pieces(&big, 4096, u64::MAX).unwrap();
        assert!(matches!(&r[..], [Reply::Array(a)] if a.len() == n));
    }

    #[test]
    fn decoder_caps_a_reply() {
        // A bulk over the cap is refused from its header, before its bytes arrive.
        let e = decode_in_pieces(b"$1000000\r\n", 64, 1000).unwrap_err();
        assert_eq!(e.kind, RespErrorKind::ReplyTooLong(1000));
        // So is an array whose length cannot fit, from its header, whatever the cap.
        for cap in [1000, 4 << 30] {
            let e = decode_in_pieces(
                &[&b"*2147483647\r\n"[..], &b":1\r\n".repeat(1000)].concat(),
                64,
                cap,
            )
            .unwrap_err();
            assert_eq!((e.offset, e.kind), (0, RespErrorKind::ReplyTooLong(cap)));
        }
        // An array whose header fits stops once its elements, as parsed, pass the cap.
        let cap = 100 * (8 + ELEMENT_COST as u64);
        let e = decode_in_pieces(
            &[&b"*100\r\n"[..], &b"$10\r\n0123456789\r\n".repeat(100)].concat(),
            64,
            cap,
        )
        .unwrap_err();
        assert_eq!(e.kind, RespErrorKind::ReplyTooLong(cap));
        // The cap is per reply.
        let one = 9 + ELEMENT_COST as u64;
        let ok = decode_in_pieces(&b"$3\r\nabc\r\n".repeat(10), 7, one).unwrap();
        assert_eq!(ok.len(), 10);
    }

    #[test]
    fn reply_consumes_only_one_reply() {
        assert_eq!(
            parse_reply(b"+OK\r\n+OK\r\n"),
            Ok(Some((Reply::Simple(b"OK".to_vec()), 5)))
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: &[(&[u8], u64)] = &[
            (b"\n", 0),
            (b"x\r\n", 0),
            (b":1.5\r\n", 1),
            (b":\r\n", 1),
            (b"$-2\r\n", 1),
            (b"!-1\r\n", 1),
            (b"%-1\r\n", 1),
            (b"$1\r\nabc", 5),
            (b"#x\r\n", 1),
            (b"_x\r\n", 1),
            (b",abc\r\n", 1),
            (b"+a\rb\r\n", 2),
            (b"*2\r\n:1\r\n?\r\n", 8),
        ];
        for &(buf, offset) in cases {
            match parse_reply(buf) {
                Err(e) => assert_eq!(e.offset, offset, "{buf:?}: {e}"),
                other => panic!("{buf:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let buf = b"*1\r\n".repeat(MAX_DEPTH + 10);
        assert!(matches!(
            parse_reply(&buf),
            Err(RespError {
                kind: RespErrorKind::TooDeep(_),
                ..
            })
        ));
    }

    #[test]
    fn overlong_lines_are_errors() {
        let mut buf = b"+".to_vec();
        buf.resize(MAX_SIMPLE_LINE + 2, b'a');
        assert!(matches!(
            parse_reply(&buf),
            Err(RespError {
                kind: RespErrorKind::LineTooLong { .. },
                ..
            })
        ));
        buf.truncate(MAX_SIMPLE_LINE);
        assert_eq!(parse_reply(&buf), Ok(None));
    }
}
