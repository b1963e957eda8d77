//! Frames over the socket: one length-prefixed body read or written at a time, async for
//! the supervisor and the batching worker, blocking (decoded as it is read) for the
//! one-thread worker.

use super::codec::Stream;
use super::{Frame, MAX_FRAME};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame body; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    if !started(reader.read_exact(&mut header).await.map(drop))? {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len(header)?];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// [`read_frame`] and [`Frame::decode`] in one, for the one-thread worker's blocking
/// socket: the frame's fields are read from the socket as they are decoded, so a tensor's
/// bytes land straight in their own buffer, not in the frame's and copied out of it (an
/// image is 600 KB). `Ok(None)` on a clean end of stream between frames. After an error
/// the stream is mid-frame: the connection is done.
pub fn read_decoded_blocking<R: std::io::Read>(reader: &mut std::io::BufReader<R>) -> std::io::Result<Option<Frame>> {
    let mut header = [0u8; 4];
    if !started(std::io::Read::read_exact(reader, &mut header))? {
        return Ok(None);
    }
    let mut stream = Stream::new(reader, body_len(header)?);
    let decoded = Frame::read(&mut stream);
    stream.finish(decoded).map(Some)
}

/// Whether a frame header was read: false on a clean end of stream before it.
fn started(header_read: std::io::Result<()>) -> std::io::Result<bool> {
    match header_read {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The body length a header announces, refused past [`MAX_FRAME`] so a corrupt length
/// never allocates.
fn body_len(header: [u8; 4]) -> std::io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    Ok(len)
}

/// Reads and decodes one frame; end of stream and undecodable frames are errors here.
pub async fn recv<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Frame> {
    let body = read_frame(reader)
        .await?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"))?;
    Frame::decode(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Encodes and writes one frame, flushing it.
pub async fn send<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> std::io::Result<()> {
    writer.write_all(&frame.encode()).await?;
    writer.flush().await
}
