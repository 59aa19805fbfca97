//! `query_timeout`: how long a server that owes an answer may stay silent
//! before the relay gives up on it. One alarm per relay call, re-armed only
//! when it rings early, so hearing from the server costs one clock read and
//! no timer update; with the timeout off it costs nothing.

use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct SilenceWatch {
    /// (the timeout, when the server was last heard from or sent something
    /// to answer, the alarm); `None`: off.
    on: Option<(Duration, Instant, Pin<Box<Sleep>>)>,
    watching: bool,
}

impl SilenceWatch {
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            on: timeout.map(|d| (d, Instant::now(), Box::pin(tokio::time::sleep(d)))),
            watching: false,
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// The server spoke, or was sent something to answer: silence counts
    /// from now.
    pub fn heard(&mut self) {
        if let Some((_, heard, _)) = &mut self.on {
            *heard = Instant::now();
        }
    }

    /// Whether silence counts now (pgtenant reads the server for an answer
    /// it owes). Counting resumes from the moment it starts again: a slow
    /// client may have held the output back for long.
    pub fn watch(&mut self, now: bool) {
        if now && !self.watching {
            self.heard();
        }
        self.watching = now;
    }

    /// Waits until the server has been silent for the whole timeout (never,
    /// when off).
    pub async fn silent(&mut self) {
        let Some((timeout, heard, alarm)) = &mut self.on else {
            return std::future::pending().await;
        };
        loop {
            alarm.as_mut().await;
            if heard.elapsed() >= *timeout {
                return;
            }
            alarm.as_mut().reset(*heard + *timeout);
        }
    }
}
