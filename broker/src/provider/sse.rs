//! Reading a provider's response body within bounds: at most `max_response_bytes` in all, and no longer than the
//! request timeout between two pieces. [`Events`] parses it as server-sent events with the eventsource-stream crate;
//! [`read_body`] reads it whole (JSON responses, error bodies).

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use neuraphage_ipc::llm::{LlmErrorKind, LlmFailure};

use super::{cut, error_chain, failure, malformed};

/// Why the body stream stopped.
#[derive(Debug)]
enum BodyError {
    /// The connection failed while reading.
    Http(reqwest::Error),
    /// More than the cap arrived.
    TooLarge(usize),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Http(e) => write!(f, "{}", error_chain(e)),
            BodyError::TooLarge(limit) => write!(f, "the response is larger than {limit} bytes"),
        }
    }
}

type EventResult = Result<Event, EventStreamError<BodyError>>;

/// The SSE events of a response body.
pub struct Events {
    inner: Pin<Box<dyn Stream<Item = EventResult> + Send>>,
    idle: Duration,
    failed: bool,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("idle", &self.idle).finish_non_exhaustive()
    }
}

impl Events {
    /// Events of `response`'s body, refusing more than `max_bytes` in all and waits longer than `idle`.
    pub fn new(response: reqwest::Response, max_bytes: usize, idle: Duration) -> Events {
        Events::from_stream(response.bytes_stream(), max_bytes, idle)
    }

    /// Events of any byte stream (a response body, or test input).
    pub(crate) fn from_stream<S, B>(body: S, max_bytes: usize, idle: Duration) -> Events
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
    {
        let mut seen = 0usize;
        let bytes = body.map(move |chunk| {
            let chunk = chunk.map_err(BodyError::Http)?;
            seen = seen.saturating_add(chunk.as_ref().len());
            if seen > max_bytes { Err(BodyError::TooLarge(max_bytes)) } else { Ok(chunk) }
        });
        Events { inner: Box::pin(bytes.eventsource()), idle, failed: false }
    }

    /// The next event; `Ok(None)` at the end of the body. After a failure, always `Ok(None)`.
    pub async fn next(&mut self) -> Result<Option<Event>, LlmFailure> {
        if self.failed {
            return Ok(None);
        }
        let result = match tokio::time::timeout(self.idle, self.inner.next()).await {
            Err(_) => Err(failure(
                LlmErrorKind::Transport,
                format!("the stream stalled: nothing for {:?}", self.idle),
                None,
                true,
            )),
            Ok(None) => Ok(None),
            Ok(Some(Ok(event))) => Ok(Some(event)),
            Ok(Some(Err(EventStreamError::Transport(BodyError::TooLarge(limit))))) => {
                Err(malformed(format!("the response is larger than {limit} bytes (max_response_bytes); refused")))
            }
            Ok(Some(Err(EventStreamError::Transport(BodyError::Http(error))))) if error.is_timeout() => {
                Err(failure(LlmErrorKind::Transport, format!("timed out: {}", error_chain(&error)), None, true))
            }
            Ok(Some(Err(EventStreamError::Transport(BodyError::Http(error))))) => {
                Err(cut(format!("the stream was cut: {}", error_chain(&error))))
            }
            Ok(Some(Err(EventStreamError::Utf8(error)))) => Err(malformed(format!("the stream is not UTF-8: {error}"))),
            Ok(Some(Err(EventStreamError::Parser(error)))) => {
                Err(malformed(format!("the stream is not server-sent events: {error}")))
            }
        };
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

/// The whole body, or a failure when it is larger than `max_bytes`, cut, or stalls longer than `idle`.
pub async fn read_body(
    mut response: reqwest::Response,
    max_bytes: usize,
    idle: Duration,
) -> Result<Vec<u8>, LlmFailure> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => {
                return Err(failure(
                    LlmErrorKind::Transport,
                    format!("the response stalled: nothing for {idle:?}"),
                    None,
                    true,
                ));
            }
            Ok(Err(error)) if error.is_timeout() => {
                return Err(failure(
                    LlmErrorKind::Transport,
                    format!("timed out: {}", error_chain(&error)),
                    None,
                    true,
                ));
            }
            Ok(Err(error)) => return Err(cut(format!("the response was cut: {}", error_chain(&error)))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len().saturating_add(chunk.len()) > max_bytes {
                    return Err(malformed(format!(
                        "the response is larger than {max_bytes} bytes (max_response_bytes); refused"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// Up to `max_bytes` of the body, whatever happens (for error messages: a failure just ends the text early).
pub async fn read_body_truncated(mut response: reqwest::Response, max_bytes: usize, idle: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(idle, response.chunk()).await {
        let room = max_bytes.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= max_bytes {
            break;
        }
    }
    body
}
