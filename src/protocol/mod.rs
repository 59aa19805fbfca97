//! Pure PostgreSQL wire-protocol codec: framing, the startup packet and the few
//! messages pgtenant writes itself. Knows no sockets, no config, no metrics.

pub mod extended;
pub mod frame;
pub mod messages;
pub mod sqlstate;
pub mod startup;
pub mod tag;

/// Largest regular message we relay (PostgreSQL's own MaxAllocSize is 1 GB).
/// Bodies stream through, so this bounds nothing in memory; it rejects lengths
/// that can only be garbage.
pub const MAX_MESSAGE_LEN: u32 = 1 << 30;

/// Largest message pgtenant reads whole (Query, Parse, Bind, Describe, Close:
/// it needs their SQL or statement names). COPY data and rows stream at any size.
pub const MAX_WHOLE_MESSAGE: usize = 128 << 20;

/// Largest startup packet PostgreSQL accepts (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: u32 = 10_000;
