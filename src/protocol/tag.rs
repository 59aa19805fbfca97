//! Message type bytes, named per direction: the same byte means different
//! messages each way (`b'S'` is Sync from a client and ParameterStatus from a
//! server; `b'E'` is Execute and ErrorResponse).

/// Sent by clients (and by pgtenant to servers).
pub mod frontend {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
}

/// Sent by servers (and by pgtenant to clients).
pub mod backend {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const DATA_ROW: u8 = b'D';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
}
