//! Reading and rewriting the statement names in extended-protocol messages
//! (Parse, Bind, Describe, Close). Works on whole message bodies; everything
//! after the names is copied verbatim, never re-encoded.

use super::messages::{begin, finish};
use bytes::{BufMut, BytesMut};

/// Describe/Close target kinds: a prepared statement or a portal.
pub const STATEMENT: u8 = b'S';
pub const PORTAL: u8 = b'P';

/// Splits a NUL-terminated name off the front of `body`.
pub fn split_name(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = body.iter().position(|b| *b == 0)?;
    Some((&body[..nul], &body[nul + 1..]))
}

/// Parse: `name`, then the query, parameter count and types (`rest`) unchanged.
pub fn parse(out: &mut BytesMut, name: &[u8], rest: &[u8]) {
    let at = begin(out, b'P');
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(rest);
    finish(out, at);
}

/// Parse with a replacement query and no parameter types.
pub fn parse_query(out: &mut BytesMut, name: &[u8], query: &str) {
    let at = begin(out, b'P');
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(query.as_bytes());
    out.put_u8(0);
    out.put_i16(0);
    finish(out, at);
}

/// Bind of `portal` to `statement`, formats and values (`rest`) unchanged.
pub fn bind(out: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    let at = begin(out, b'B');
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(statement);
    out.put_u8(0);
    out.put_slice(rest);
    finish(out, at);
}

/// Describe (`tag` b'D') or Close (`tag` b'C') of a statement (`kind` b'S') or portal.
pub fn describe_or_close(out: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    let at = begin(out, tag);
    out.put_u8(kind);
    out.put_slice(name);
    out.put_u8(0);
    finish(out, at);
}

/// Bind of the unnamed portal to the unnamed statement, with text parameters
/// and text results.
pub fn bind_text(out: &mut BytesMut, params: &[&[u8]]) {
    let at = begin(out, b'B');
    out.put_slice(&[0, 0]);
    text_values(out, params);
    finish(out, at);
}

/// Values as Bind and FunctionCall carry them: no format codes (all text),
/// each value length-prefixed, then no result format codes (text).
fn text_values(out: &mut BytesMut, values: &[&[u8]]) {
    out.put_i16(0);
    out.put_i16(values.len() as i16);
    for v in values {
        out.put_i32(v.len() as i32);
        out.put_slice(v);
    }
    out.put_i16(0);
}

/// Execute of the unnamed portal, all rows.
pub fn execute(out: &mut BytesMut) {
    let at = begin(out, b'E');
    out.put_u8(0);
    out.put_i32(0);
    finish(out, at);
}

pub fn sync(out: &mut BytesMut) {
    let at = begin(out, b'S');
    finish(out, at);
}

pub use super::messages::query;

/// The query text of a Parse body (after the statement name).
pub fn parse_query_text(rest: &[u8]) -> Option<&[u8]> {
    split_name(rest).map(|(q, _)| q)
}

/// FunctionCall of the function `oid` with text arguments, a text result: no
/// parsing or planning on the server, and immune to `search_path` (the
/// function is named by OID). Answered by FunctionCallResponse and
/// ReadyForQuery, in a transaction of its own.
pub fn function_call_text(out: &mut BytesMut, oid: u32, args: &[&[u8]]) {
    let at = begin(out, crate::protocol::tag::frontend::FUNCTION_CALL);
    out.put_u32(oid);
    text_values(out, args);
    finish(out, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_keeps_everything_after_the_names() {
        let mut out = BytesMut::new();
        bind(
            &mut out,
            b"",
            b"pgt1_0",
            &[0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2', 0, 0],
        );
        let body = &out[5..];
        let (portal, rest) = split_name(body).expect("portal");
        let (stmt, rest) = split_name(rest).expect("stmt");
        assert_eq!((portal, stmt), (&b""[..], &b"pgt1_0"[..]));
        assert_eq!(rest, &[0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2', 0, 0]);
        assert_eq!(
            u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize,
            out.len() - 1
        );
    }

    #[test]
    fn a_function_call_carries_the_oid_and_text_arguments() {
        let mut out = BytesMut::new();
        function_call_text(&mut out, 2078, &[b"search_path", b"t_a"]);
        let want: &[u8] =
            b"F\0\0\0\x24\0\0\x08\x1e\0\0\0\x02\0\0\0\x0bsearch_path\0\0\0\x03t_a\0\0";
        assert_eq!(&out[..], want);
    }
}
