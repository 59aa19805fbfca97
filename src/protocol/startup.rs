//! The first packet a client sends: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage. Parsed by hand (it is a length, a code and C strings) with
//! strict bounds, because it is the one message that arrives before any trust.

use thiserror::Error;

pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;
pub const PROTOCOL_3_0: u32 = 196_608;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid startup packet length {0}")]
    BadLength(u32),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout")]
    Malformed,
    #[error("startup packet parameter is not valid UTF-8")]
    NotUtf8,
}

/// A decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup(StartupParams),
}

/// Startup parameters in the order the client sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams {
    pub minor_version: u16,
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Protocol options (`_pq_.*`) we don't understand, for NegotiateProtocolVersion.
    pub fn protocol_options(&self) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Validates the 4-byte length that opens the first packet (it counts itself).
pub fn check_length(len: u32) -> Result<usize, StartupError> {
    if !(8..=super::MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    Ok(len as usize - 4)
}

/// Decodes the packet body (everything after the length).
pub fn parse_first_packet(body: &[u8]) -> Result<FirstPacket, StartupError> {
    if body.len() < 4 {
        return Err(StartupError::Malformed);
    }
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(FirstPacket::GssEncRequest),
        CANCEL_REQUEST if rest.len() == 8 => Ok(FirstPacket::Cancel {
            pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            secret: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(StartupError::Malformed),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            Ok(FirstPacket::Startup(StartupParams {
                minor_version: minor,
                params: parse_params(rest)?,
            }))
        }
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut out = Vec::new();
    loop {
        let (key, after) = take_cstr(rest)?;
        if key.is_empty() {
            return if after.is_empty() {
                Ok(out)
            } else {
                Err(StartupError::Malformed)
            };
        }
        let (value, after) = take_cstr(after)?;
        out.push((key.to_owned(), value.to_owned()));
        rest = after;
    }
}

fn take_cstr(buf: &[u8]) -> Result<(&str, &[u8]), StartupError> {
    let nul = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or(StartupError::Malformed)?;
    let s = std::str::from_utf8(&buf[..nul]).map_err(|_| StartupError::NotUtf8)?;
    Ok((s, &buf[nul + 1..]))
}

/// Splits a libpq `options` string into arguments: whitespace separates, a
/// backslash escapes the next character (as PostgreSQL's pg_split_opts does).
pub fn split_options(options: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    let mut in_arg = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_arg = true;
            }
            c if c.is_ascii_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            c => {
                cur.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    args
}

/// The `-c name=value` (or `--name=value`) settings of a libpq `options`
/// string, in order.
pub fn option_settings(options: &str) -> Vec<(String, String)> {
    let args = split_options(options);
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let setting = if arg == "-c" || arg == "--" {
            it.next().map(String::as_str)
        } else if let Some(s) = arg.strip_prefix("-c") {
            Some(s)
        } else {
            arg.strip_prefix("--")
        };
        if let Some((k, v)) = setting.and_then(|s| s.split_once('=')) {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// Escapes one value for an `options` string (inverse of [`split_options`]).
pub fn escape_option(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c.is_ascii_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (k, v) in params {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn parses_startup_params() {
        let p = parse_first_packet(&startup(&[("user", "app.acme"), ("database", "app")]))
            .expect("valid");
        let FirstPacket::Startup(p) = p else {
            panic!("not a startup")
        };
        assert_eq!(p.get("user"), Some("app.acme"));
        assert_eq!(p.get("database"), Some("app"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(check_length(0xFFFF_FFFF).is_err());
        assert!(check_length(4).is_err());
        assert!(parse_first_packet(b"\x00\x03\x00\x00user").is_err());
        assert!(matches!(
            parse_first_packet(b"GET / HTTP/1.1"),
            Err(StartupError::UnsupportedProtocol { .. })
        ));
        let mut missing_terminator = startup(&[("user", "x")]);
        missing_terminator.pop();
        assert!(parse_first_packet(&missing_terminator).is_err());
    }

    #[test]
    fn options_round_trip() {
        let args = split_options(r"-c tenant=acme  -csearch_path=a\ b --x=1");
        assert_eq!(
            args,
            vec!["-c", "tenant=acme", "-csearch_path=a b", "--x=1"]
        );
        assert_eq!(split_options(&escape_option("a b\\c")), vec!["a b\\c"]);
    }
}

/// Property tests: hostile first packets get an error, never a panic; an
/// escaped option value reads back as itself.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_first_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_first_packet(&bytes);
            if bytes.len() >= 4 {
                let _ = check_length(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
            }
        }

        #[test]
        fn escaped_option_values_split_back(value in "[^\u{0}]{1,40}") {
            let escaped = escape_option(&value);
            prop_assert_eq!(split_options(&escaped), vec![value]);
        }
    }
}
