//! Streaming frame scanner: finds message boundaries in a byte stream without
//! copying or decoding bodies, so the relay can forward bytes as they arrive
//! (a 200 MB CopyData never sits whole in memory).

use thiserror::Error;

/// A frame header that cannot be valid: the connection must be closed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid message length {len} for message type {tag:?}")]
pub struct FrameError {
    pub tag: char,
    pub len: u32,
}

/// What the scanner's caller wants after seeing a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep scanning.
    Continue,
    /// Stop with this message not consumed (its header stays in the buffer).
    StopBefore,
}

/// Result of one scan call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes of the buffer (from its start) that may be forwarded now.
    pub end: usize,
    /// The callback asked to stop before a message.
    pub stopped: bool,
}

/// Walks message headers across reads. The only state is how many body bytes of
/// the current message are still to come.
#[derive(Debug, Default, Clone)]
pub struct FrameScanner {
    remaining: usize,
}

impl FrameScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the scanner sits between two messages.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Scans `buf[from..]`. For each complete header, calls `on_header(tag, peek)`
    /// where `peek` holds the first `peek_len(tag)` body bytes (e.g. the status
    /// byte of ReadyForQuery). Returns how far the buffer may be forwarded; a
    /// partial header at the end is left for the next call.
    #[inline]
    pub fn scan(
        &mut self,
        buf: &[u8],
        from: usize,
        peek_len: impl Fn(u8) -> usize,
        mut on_header: impl FnMut(u8, &[u8]) -> Flow,
    ) -> Result<Scanned, FrameError> {
        let mut pos = from;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - pos);
                pos += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(Scanned {
                        end: pos,
                        stopped: false,
                    });
                }
            }
            let avail = buf.len() - pos;
            if avail < 5 {
                return Ok(Scanned {
                    end: pos,
                    stopped: false,
                });
            }
            let tag = buf[pos];
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]]);
            if !(4..=super::MAX_MESSAGE_LEN).contains(&len) {
                return Err(FrameError {
                    tag: tag as char,
                    len,
                });
            }
            let body = (len - 4) as usize;
            let wanted = peek_len(tag);
            if wanted > body && body > super::MAX_WHOLE_MESSAGE {
                // The caller needs this message whole: refuse to buffer a giant.
                return Err(FrameError {
                    tag: tag as char,
                    len,
                });
            }
            let peek = wanted.min(body);
            if avail < 5 + peek {
                return Ok(Scanned {
                    end: pos,
                    stopped: false,
                });
            }
            if on_header(tag, &buf[pos + 5..pos + 5 + peek]) == Flow::StopBefore {
                return Ok(Scanned {
                    end: pos,
                    stopped: true,
                });
            }
            pos += 5;
            self.remaining = body;
        }
    }
}

/// Peek length for server-to-client traffic: the status byte of ReadyForQuery.
#[inline]
pub fn server_peek(tag: u8) -> usize {
    usize::from(tag == b'Z')
}

/// The whole length of the message whose header starts at `at` (its tag
/// byte, then a length that counts itself but not the tag).
#[inline]
pub fn frame_len(buf: &[u8], at: usize) -> usize {
    1 + u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize
}

/// The buffer holds its first message whole (header and body).
pub fn first_whole(buf: &[u8]) -> bool {
    buf.len() >= 5 && buf.len() >= frame_len(buf, 0)
}

/// Client-to-server traffic needs no body bytes.
#[inline]
pub fn no_peek(_tag: u8) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn finds_every_header_across_arbitrary_splits() {
        let mut stream = msg(b'T', b"abc");
        stream.extend(msg(b'D', &[7u8; 300]));
        stream.extend(msg(b'Z', b"I"));
        for split in 0..stream.len() {
            let mut sc = FrameScanner::new();
            let mut seen = Vec::new();
            let mut buf = stream[..split].to_vec();
            let first = sc
                .scan(&buf, 0, server_peek, |t, p| {
                    seen.push((t, p.to_vec()));
                    Flow::Continue
                })
                .expect("valid");
            // Keep unforwarded bytes, append the rest.
            buf.drain(..first.end);
            buf.extend_from_slice(&stream[split..]);
            let second = sc
                .scan(&buf, 0, server_peek, |t, p| {
                    seen.push((t, p.to_vec()));
                    Flow::Continue
                })
                .expect("valid");
            assert_eq!(second.end, buf.len(), "split {split}");
            let tags: Vec<u8> = seen.iter().map(|s| s.0).collect();
            assert_eq!(tags, b"TDZ", "split {split}");
            assert_eq!(seen[2].1, b"I");
            assert!(sc.at_boundary());
        }
    }

    #[test]
    fn rejects_impossible_lengths() {
        let mut sc = FrameScanner::new();
        let bad = [b'Q', 0xff, 0xff, 0xff, 0xff];
        assert!(sc.scan(&bad, 0, no_peek, |_, _| Flow::Continue).is_err());
        let short = [b'Q', 0, 0, 0, 3];
        assert!(sc.scan(&short, 0, no_peek, |_, _| Flow::Continue).is_err());
    }

    #[test]
    fn stop_before_leaves_message_unconsumed() {
        let mut stream = msg(b'Q', b"select 1\0");
        stream.extend(msg(b'X', b""));
        let mut sc = FrameScanner::new();
        let r = sc
            .scan(&stream, 0, no_peek, |t, _| {
                if t == b'X' {
                    Flow::StopBefore
                } else {
                    Flow::Continue
                }
            })
            .expect("valid");
        assert!(r.stopped);
        assert_eq!(r.end, 14);
    }
}

/// Property tests: however the bytes arrive, the scanner finds the same
/// messages; arbitrary bytes never make it panic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        proptest::collection::vec(
            (b'A'..=b'z', proptest::collection::vec(any::<u8>(), 0..64)),
            0..20,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_chunking_finds_the_same_messages(
            frames in frames(),
            cuts in proptest::collection::vec(1usize..40, 1..50),
        ) {
            let mut wire = Vec::new();
            for (tag, body) in &frames {
                wire.push(*tag);
                wire.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
                wire.extend_from_slice(body);
            }
            let mut scanner = FrameScanner::new();
            let mut buf: Vec<u8> = Vec::new();
            let mut tags = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < wire.len() {
                let n = (*cut.next().unwrap_or(&1)).min(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
                let r = scanner
                    .scan(&buf, 0, no_peek, |tag, _| {
                        tags.push(tag);
                        Flow::Continue
                    })
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                buf.drain(..r.end);
            }
            prop_assert!(buf.is_empty() && scanner.at_boundary());
            prop_assert_eq!(tags, frames.iter().map(|f| f.0).collect::<Vec<_>>());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut scanner = FrameScanner::new();
            let _ = scanner.scan(&bytes, 0, |_| 4, |_, _| Flow::Continue);
        }
    }

    #[test]
    fn first_whole_needs_the_whole_first_message() {
        let q = [b'Q', 0, 0, 0, 6, b'x', 0];
        assert!(first_whole(&q));
        assert!(first_whole(&[&q[..], b"Q\0"].concat()));
        assert!(!first_whole(&q[..6]));
        assert!(!first_whole(&q[..4]));
        assert!(!first_whole(&[]));
    }
}
