//! RESP encoding of commands: `*<argc>\r\n` then `$<len>\r\n<bytes>\r\n` per argument.
//!
//! Sinks use this to send commands to a server and to write AOF files; the output is
//! byte-identical to what Redis itself writes to an AOF or a replication stream. Numbers are
//! formatted with `itoa` into a stack buffer, so encoding allocates nothing beyond the growth
//! of the output buffer.
//!
//! Not here: encoding replies (rdbferry never plays the server) and inline commands.

use std::io::{self, BufWriter, Write};

/// Appends the `<prefix><n>\r\n` header line.
fn header(out: &mut Vec<u8>, prefix: u8, n: usize) {
    let mut num = itoa::Buffer::new();
    out.push(prefix);
    out.extend_from_slice(num.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one command, encoded as a RESP array of bulk strings, to `out`.
///
/// ```
/// let mut out = Vec::new();
/// rdbferry::resp::write_command(&mut out, &[b"SET", b"k", b""]);
/// assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
/// ```
pub fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.reserve(encoded_len(args));
    header(out, b'*', args.len());
    for arg in args {
        header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The number of bytes [`write_command`] produces for `args` (what a replication offset or an
/// AOF size advances by).
pub fn encoded_len(args: &[&[u8]]) -> usize {
    fn digits(mut n: usize) -> usize {
        let mut d = 1;
        while n >= 10 {
            n /= 10;
            d += 1;
        }
        d
    }
    args.iter().fold(3 + digits(args.len()), |acc, a| {
        acc + 5 + digits(a.len()) + a.len()
    })
}

/// Writes commands to `W` through a buffer.
///
/// A thin layer over [`BufWriter`]: small commands are gathered into one `write` call, while
/// an argument larger than the buffer goes straight to `W` without being copied (a 100 MB value
/// for `RESTORE` is not duplicated in memory). Like `BufWriter`, dropping the writer flushes
/// it and ignores errors; call [`CommandWriter::flush`] to see them.
///
/// ```
/// use rdbferry::resp::CommandWriter;
///
/// let mut w = CommandWriter::new(Vec::new());
/// w.write_command(&[b"SELECT", b"0"])?;
/// w.write_command(&[b"PING"])?;
/// assert_eq!(w.bytes_written(), 23 + 14);
/// let out = w.into_inner()?;
/// assert_eq!(out, b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*1\r\n$4\r\nPING\r\n");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct CommandWriter<W: Write> {
    inner: BufWriter<W>,
    written: u64,
}

impl<W: Write> CommandWriter<W> {
    /// A writer with the default buffer size (64 KiB).
    pub fn new(inner: W) -> Self {
        Self::with_capacity(64 << 10, inner)
    }

    /// A writer with a buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize, inner: W) -> Self {
        CommandWriter {
            inner: BufWriter::with_capacity(capacity, inner),
            written: 0,
        }
    }

    /// Encodes one command into the buffer, writing to `W` when the buffer fills.
    pub fn write_command(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut num = itoa::Buffer::new();
        let mut put = |w: &mut BufWriter<W>, prefix: &[u8], n: usize| -> io::Result<()> {
            w.write_all(prefix)?;
            w.write_all(num.format(n).as_bytes())?;
            w.write_all(b"\r\n")
        };
        put(&mut self.inner, b"*", args.len())?;
        for arg in args {
            put(&mut self.inner, b"$", arg.len())?;
            self.inner.write_all(arg)?;
            self.inner.write_all(b"\r\n")?;
        }
        self.written += encoded_len(args) as u64;
        Ok(())
    }

    /// Total bytes of the commands written so far (buffered or not).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes out the buffer and flushes `W`.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }

    /// Flushes the buffer and returns the underlying writer.
    pub fn into_inner(self) -> io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_redis() {
        let mut out = Vec::new();
        write_command(&mut out, &[b"SET", b"a\r\nb", b"\x00\xff"]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n$2\r\n\x00\xff\r\n"
        );
        write_command(&mut out, &[]);
        assert!(out.ends_with(b"*0\r\n"));
    }

    #[test]
    fn encoded_len_matches_output() {
        let big = vec![b'x'; 12345];
        let many: Vec<&[u8]> = vec![b"a"; 10];
        let cases: [&[&[u8]]; 5] = [
            &[],
            &[b""],
            &[b"SET", b"key", b"value"],
            &[&big, b"0123456789"],
            &many,
        ];
        for args in cases {
            let mut out = Vec::new();
            write_command(&mut out, args);
            assert_eq!(encoded_len(args), out.len(), "{args:?}");
        }
    }

    #[test]
    fn command_writer_matches_write_command() {
        let big = vec![7u8; 1000];
        let cmds: [&[&[u8]]; 3] = [&[b"SELECT", b"9"], &[b"RESTORE", b"k", b"0", &big], &[b""]];
        let mut expected = Vec::new();
        // A small buffer, so the large argument bypasses it.
        let mut w = CommandWriter::with_capacity(16, Vec::new());
        for args in cmds {
            write_command(&mut expected, args);
            w.write_command(args).unwrap();
        }
        assert_eq!(w.bytes_written(), expected.len() as u64);
        assert_eq!(w.into_inner().unwrap(), expected);
    }

    #[test]
    fn write_errors_surface() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = CommandWriter::with_capacity(8, Full);
        assert!(
            w.write_command(&[b"SET", b"key", b"a value longer than 8"])
                .is_err()
        );
    }
}
