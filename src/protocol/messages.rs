//! Builders for the backend messages pgtenant writes itself (during login and
//! for its own errors). Everything else is relayed as framed bytes.

use bytes::{BufMut, BytesMut};

/// Starts a message: tag plus a length placeholder; [`finish`] fills the length.
pub(crate) fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

pub(crate) fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// Severity of an ErrorResponse pgtenant sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let at = begin(buf, b'E');
    for field in [b'S', b'V'] {
        buf.put_u8(field);
        put_cstr(buf, severity.as_str());
    }
    buf.put_u8(b'C');
    put_cstr(buf, code);
    buf.put_u8(b'M');
    put_cstr(buf, message);
    if let Some(h) = hint {
        buf.put_u8(b'H');
        put_cstr(buf, h);
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// A NoticeResponse with a detail (the console's SHOW HELP, `SET ignored`).
pub fn notice(buf: &mut BytesMut, message: &str, detail: Option<&str>) {
    let at = begin(buf, b'N');
    for field in [b'S', b'V'] {
        buf.put_u8(field);
        put_cstr(buf, "NOTICE");
    }
    buf.put_u8(b'C');
    put_cstr(buf, "00000");
    buf.put_u8(b'M');
    put_cstr(buf, message);
    if let Some(d) = detail {
        buf.put_u8(b'D');
        put_cstr(buf, d);
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// A RowDescription of text-format columns: (name, type oid).
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    let at = begin(buf, b'T');
    buf.put_i16(columns.len() as i16);
    for (name, oid) in columns {
        put_cstr(buf, name);
        buf.put_u32(0);
        buf.put_i16(0);
        buf.put_u32(*oid);
        buf.put_i16(match oid {
            20 => 8,
            23 => 4,
            _ => -1,
        });
        buf.put_i32(-1);
        buf.put_i16(0);
    }
    finish(buf, at);
}

/// A DataRow of encoded values (None: NULL).
pub fn data_row<T: AsRef<[u8]>>(buf: &mut BytesMut, values: &[Option<T>]) {
    let at = begin(buf, b'D');
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                let v = v.as_ref();
                buf.put_i32(v.len() as i32);
                buf.put_slice(v);
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag);
    finish(buf, at);
}

/// A message with no body (ParseComplete '1', BindComplete '2',
/// CloseComplete '3', NoData 'n', EmptyQueryResponse 'I').
pub fn empty(buf: &mut BytesMut, tag: u8) {
    let at = begin(buf, tag);
    finish(buf, at);
}

/// A ParameterDescription of no parameters.
pub fn no_parameters(buf: &mut BytesMut) {
    let at = begin(buf, b't');
    buf.put_i16(0);
    finish(buf, at);
}

pub fn auth_request(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn auth_ok(buf: &mut BytesMut) {
    auth_request(buf, 0, &[]);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, name);
    put_cstr(buf, value);
    finish(buf, at);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(secret);
    finish(buf, at);
}

/// NotificationResponse: `pid` is the sender as the listener should see it.
pub fn notification_response(buf: &mut BytesMut, pid: i32, channel: &str, payload: &str) {
    let at = begin(buf, crate::protocol::tag::backend::NOTIFICATION_RESPONSE);
    buf.put_i32(pid);
    put_cstr(buf, channel);
    put_cstr(buf, payload);
    finish(buf, at);
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_` options.
pub fn negotiate_protocol_version(buf: &mut BytesMut, options: &[&str]) {
    let at = begin(buf, b'v');
    buf.put_i32(0);
    buf.put_i32(options.len() as i32);
    for o in options {
        put_cstr(buf, o);
    }
    finish(buf, at);
}

/// A simple Query message (used for pgtenant's own statements on server links).
pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    put_cstr(buf, sql);
    finish(buf, at);
}

pub fn terminate(buf: &mut BytesMut) {
    let at = begin(buf, b'X');
    finish(buf, at);
}

/// The 16-byte CancelRequest packet.
pub fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16i32.to_be_bytes());
    out[4..8].copy_from_slice(&super::startup::CANCEL_REQUEST.to_be_bytes());
    out[8..12].copy_from_slice(&pid.to_be_bytes());
    out[12..].copy_from_slice(&secret.to_be_bytes());
    out
}

/// Name and value of a ParameterStatus body (the one parser of it).
pub fn parameter_status_fields(body: &[u8]) -> Option<(&str, &str)> {
    let mut parts = body.splitn(3, |b| *b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = std::str::from_utf8(parts.next()?).ok()?;
    parts.next()?;
    Some((name, value))
}

/// The values of a DataRow body as text (NULL as None); a malformed row
/// yields the values read so far.
pub fn data_row_text(body: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let Some(count) = body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return out;
    };
    let mut at = 2;
    for _ in 0..count.max(0) {
        let Some(len) = body.get(at..at + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let Some(v) = body.get(at..at + len as usize) else {
            break;
        };
        out.push(Some(String::from_utf8_lossy(v).into_owned()));
        at += len as usize;
    }
    out
}

/// Fields of an ErrorResponse/NoticeResponse body, for logs and error mapping.
pub fn parse_error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&code, after)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some(nul) = after.iter().position(|b| *b == 0) else {
            break;
        };
        out.push((code, String::from_utf8_lossy(&after[..nul]).into_owned()));
        rest = &after[nul + 1..];
    }
    out
}

/// SQLSTATE and message of an ErrorResponse body.
pub fn error_code_and_message(body: &[u8]) -> (String, String) {
    let fields = parse_error_fields(body);
    let get = |c: u8| {
        fields
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // A server that leaves out the SQLSTATE (hostile or broken) still gets
    // a code: internal_error.
    let code = get(b'C');
    let code = if code.is_empty() {
        "XX000".to_owned()
    } else {
        code
    };
    (code, get(b'M'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_status_parses_and_rejects_truncation() {
        let mut b = BytesMut::new();
        parameter_status(&mut b, "TimeZone", "UTC");
        assert_eq!(parameter_status_fields(&b[5..]), Some(("TimeZone", "UTC")));
        assert_eq!(parameter_status_fields(b"TimeZone\0UTC"), None);
    }

    #[test]
    fn error_response_round_trips() {
        let mut b = BytesMut::new();
        error_response(
            &mut b,
            Severity::Fatal,
            "3D000",
            "tenant \"x\" does not exist",
            None,
        );
        assert_eq!(b[0], b'E');
        let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        let fields = parse_error_fields(&b[5..]);
        assert!(fields.contains(&(b'C', "3D000".into())));
        assert!(fields.contains(&(b'S', "FATAL".into())));
    }
}
