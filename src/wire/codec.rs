//! Little-endian primitive encoding for frames: a growable writer, and bounds-checked
//! readers that never panic on hostile input, over a frame body in memory ([`Reader`]) or
//! over the socket, one frame at a time ([`Stream`]).

/// Why a frame body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    #[error("invalid {0} value {1} in frame")]
    BadValue(&'static str, u64),
    #[error("string in frame is not UTF-8")]
    NotUtf8,
}

pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer with room reserved for the u32 length prefix that `finish` fills in.
    pub fn with_length_prefix() -> Writer {
        Writer::with_capacity(64)
    }

    /// As [`Writer::with_length_prefix`], with room for `capacity` bytes of body.
    pub fn with_capacity(capacity: usize) -> Writer {
        let mut buf = Vec::with_capacity(capacity + 4);
        buf.extend_from_slice(&[0; 4]);
        Writer { buf }
    }

    pub fn head(&mut self, kind: u8, id: u64) {
        self.u8(kind);
        self.u64(id);
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.u32(v.len() as u32);
        self.bytes(v.as_bytes());
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf
    }
}

/// Where a frame's fields are read from: a frame body in memory ([`Reader`]), or the
/// socket itself ([`Stream`]), so a tensor's bytes can land in a buffer of their own.
pub trait Source {
    /// Fills `into` with the next bytes.
    fn fill(&mut self, into: &mut [u8]) -> Result<(), DecodeError>;
    /// The next `n` bytes, as a buffer of their own.
    fn owned(&mut self, n: usize) -> Result<Vec<u8>, DecodeError>;

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        self.fill(&mut out)?;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        String::from_utf8(self.owned(len)?).map_err(|_| DecodeError::NotUtf8)
    }
}

pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Reader<'a> {
        Reader { rest: body }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { needed: n - self.rest.len() });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn expect_end(&self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

impl Source for Reader<'_> {
    fn fill(&mut self, into: &mut [u8]) -> Result<(), DecodeError> {
        into.copy_from_slice(self.take(into.len())?);
        Ok(())
    }
    fn owned(&mut self, n: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.take(n)?.to_vec())
    }
}

/// The rest of one frame's body, read from the socket as it is decoded: never past the
/// frame's announced length. A failed read is kept for the caller ([`Stream::finish`]).
pub struct Stream<'r, R: std::io::Read> {
    reader: &'r mut std::io::BufReader<R>,
    left: usize,
    failed: Option<std::io::Error>,
}

impl<'r, R: std::io::Read> Stream<'r, R> {
    pub fn new(reader: &'r mut std::io::BufReader<R>, len: usize) -> Stream<'r, R> {
        Stream { reader, left: len, failed: None }
    }

    /// Takes `n` of the bytes left, or says how many are missing.
    fn claim(&mut self, n: usize) -> Result<(), DecodeError> {
        if n > self.left {
            return Err(DecodeError::Truncated { needed: n - self.left });
        }
        self.left -= n;
        Ok(())
    }

    fn truncated(&mut self, needed: usize, e: std::io::Error) -> DecodeError {
        if e.kind() != std::io::ErrorKind::UnexpectedEof {
            self.failed = Some(e);
        }
        DecodeError::Truncated { needed }
    }

    /// Ends the frame: the read error that cut it short, else what `decoded` says, with
    /// bytes left over refused as trailing.
    pub fn finish<T>(self, decoded: Result<T, DecodeError>) -> std::io::Result<T> {
        let invalid = |e: DecodeError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        if let Some(e) = self.failed {
            return Err(e);
        }
        let value = decoded.map_err(invalid)?;
        match self.left {
            0 => Ok(value),
            n => Err(invalid(DecodeError::Trailing(n))),
        }
    }
}

impl<R: std::io::Read> Source for Stream<'_, R> {
    fn fill(&mut self, into: &mut [u8]) -> Result<(), DecodeError> {
        self.claim(into.len())?;
        std::io::Read::read_exact(self.reader, into).map_err(|e| self.truncated(into.len(), e))
    }

    /// What the read buffer holds of them, then the rest straight from the socket into
    /// the buffer's spare capacity: no pass through the read buffer, no zeroing first.
    fn owned(&mut self, n: usize) -> Result<Vec<u8>, DecodeError> {
        use std::io::{BufRead, Read};
        self.claim(n)?;
        let mut out = Vec::with_capacity(n);
        let buffered = self.reader.buffer();
        let from_buffer = buffered.len().min(n);
        out.extend_from_slice(&buffered[..from_buffer]);
        self.reader.consume(from_buffer);
        let rest = (n - from_buffer) as u64;
        match self.reader.get_mut().take(rest).read_to_end(&mut out) {
            Ok(_) if out.len() == n => Ok(out),
            Ok(_) => Err(DecodeError::Truncated { needed: n - out.len() }),
            Err(e) => Err(self.truncated(n - out.len(), e)),
        }
    }
}
