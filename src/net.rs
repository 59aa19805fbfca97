//! Whole-message reads for handshakes (client login, server login, pgtenant's
//! own queries). The relay never uses this: it streams frames instead.

use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads one message `(tag, body)`. Bodies above `max_len` are refused before
/// anything is allocated for them.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_len: usize,
) -> io::Result<(u8, BytesMut)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 || len - 4 > max_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "invalid length {len} for message type {:?}",
                header[0] as char
            ),
        ));
    }
    buf.clear();
    buf.resize(len - 4, 0);
    stream.read_exact(&mut buf[..]).await?;
    Ok((header[0], buf.split()))
}

/// Reads a NUL-terminated string from the front of `body`, advancing it.
pub fn take_cstr<'a>(body: &mut &'a [u8]) -> Option<&'a str> {
    let nul = body.iter().position(|b| *b == 0)?;
    let s = std::str::from_utf8(&body[..nul]).ok()?;
    *body = &body[nul + 1..];
    Some(s)
}
