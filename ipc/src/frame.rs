//! Frames and typed links.
//!
//! A frame is a 4-byte big-endian length followed by a MessagePack body (rmp-serde, named fields, so a field can be
//! added without breaking an older peer). [`FrameCodec`] wraps tokio-util's `LengthDelimitedCodec`, adding the typed
//! errors of [`IpcError`]: an announced length over the link's limit is refused before any body is buffered, and a
//! stream that ends mid-frame is [`IpcError::Truncated`]. [`Link`] puts serde on top: one message type per direction.

use std::io::Cursor;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};

use crate::error::{IpcError, Result};

/// Size of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// How deep MessagePack containers may nest before a body is refused as malformed (protects the decoder's stack).
const MAX_NESTING: usize = 64;

/// Length-prefixed framing with a hard limit and typed errors.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    /// Largest frame body accepted from the peer.
    max: usize,
    /// Largest frame body we send.
    max_out: usize,
    /// True once the inner codec has consumed a length prefix and waits for that frame's body.
    in_body: bool,
}

impl FrameCodec {
    /// A codec that accepts frames whose body is at most `max_frame_length` bytes, in both directions.
    pub fn new(max_frame_length: usize) -> Self {
        FrameCodec::with_limits(max_frame_length, max_frame_length)
    }

    /// A codec with different limits for what it receives and what it sends.
    pub fn with_limits(max_in: usize, max_out: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_type::<u32>()
            .big_endian()
            .max_frame_length(max_in.max(max_out))
            .new_codec();
        FrameCodec { inner, max: max_in, max_out, in_body: false }
    }

    /// Bytes of an unfinished frame, counting a length prefix already consumed from `buf`.
    fn buffered(&self, buf: &BytesMut) -> usize {
        buf.len() + if self.in_body { LENGTH_PREFIX_BYTES } else { 0 }
    }

    /// The largest body this codec accepts.
    pub fn max_frame_length(&self) -> usize {
        self.max
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = IpcError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>> {
        // Check the announced length ourselves so the error can say what it was.
        if !self.in_body
            && let Some(prefix) = src.get(..LENGTH_PREFIX_BYTES)
        {
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            if len as u64 > self.max as u64 {
                return Err(IpcError::Oversized { len: len.into(), max: self.max });
            }
        }
        let before = src.len();
        let frame = self.inner.decode(src)?;
        // The inner codec drops the prefix from `src` once it has read it; remember that we are inside a body.
        self.in_body = frame.is_none() && (self.in_body || src.len() + LENGTH_PREFIX_BYTES == before);
        Ok(frame)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && !self.in_body => Ok(None),
            None => Err(IpcError::Truncated { buffered: self.buffered(buf) }),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = IpcError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<()> {
        if body.len() > self.max_out {
            return Err(IpcError::Oversized { len: body.len() as u64, max: self.max_out });
        }
        Ok(self.inner.encode(body, dst)?)
    }
}

/// Encode one message as a frame body (MessagePack, named fields).
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes> {
    Ok(Bytes::from(rmp_serde::to_vec_named(msg)?))
}

/// Decode one frame body into a message, refusing trailing bytes and classifying the failure.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(body));
    de.set_max_depth(MAX_NESTING);
    let msg = T::deserialize(&mut de).map_err(classify)?;
    let used = de.position();
    if used != body.len() as u64 {
        return Err(IpcError::Malformed {
            detail: format!("{} trailing bytes after a {used}-byte message", body.len() as u64 - used),
        });
    }
    Ok(msg)
}

fn classify(err: rmp_serde::decode::Error) -> IpcError {
    let detail = err.to_string();
    if detail.contains("unknown variant") {
        IpcError::UnknownVariant { detail }
    } else {
        IpcError::Malformed { detail }
    }
}

/// A typed, framed, full-duplex link: sends `Out`, receives `In`.
///
/// Any error from [`Link::recv`] means the link is unusable; its owner drops it.
#[derive(Debug)]
pub struct Link<S, In, Out> {
    framed: Framed<S, FrameCodec>,
    _messages: PhantomData<fn(Out) -> In>,
}

impl<S, In, Out> Link<S, In, Out>
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: DeserializeOwned,
    Out: Serialize,
{
    /// Wrap a byte stream; frames larger than `max_frame_length` are refused in both directions.
    pub fn new(stream: S, max_frame_length: usize) -> Self {
        Link::with_limits(stream, max_frame_length, max_frame_length)
    }

    /// Wrap a byte stream with different limits for received (`max_in`) and sent (`max_out`) frames.
    pub fn with_limits(stream: S, max_in: usize, max_out: usize) -> Self {
        Link { framed: Framed::new(stream, FrameCodec::with_limits(max_in, max_out)), _messages: PhantomData }
    }

    /// Send one message and flush it.
    pub async fn send(&mut self, msg: &Out) -> Result<()> {
        self.framed.send(encode(msg)?).await
    }

    /// Receive the next message; `Ok(None)` when the peer closed the link cleanly between frames.
    ///
    /// Cancel-safe: a partly received frame stays buffered for the next call.
    pub async fn recv(&mut self) -> Result<Option<In>> {
        match self.framed.next().await {
            None => Ok(None),
            Some(frame) => decode(&frame?).map(Some),
        }
    }

    /// Receive the next message, treating a clean close as [`IpcError::Closed`].
    pub async fn expect(&mut self) -> Result<In> {
        self.recv().await?.ok_or(IpcError::Closed)
    }

    /// Send a message of another type than the link's own (the handshake uses this).
    pub async fn send_as<T: Serialize>(&mut self, msg: &T) -> Result<()> {
        self.framed.send(encode(msg)?).await
    }

    /// Receive a message of another type than the link's own (the handshake uses this).
    pub async fn expect_as<T: DeserializeOwned>(&mut self) -> Result<T> {
        match self.framed.next().await {
            None => Err(IpcError::Closed),
            Some(frame) => decode(&frame?),
        }
    }

    /// How many bytes of an unfinished frame are buffered (0 between frames).
    pub fn partial_frame_bytes(&self) -> usize {
        self.framed.codec().buffered(self.framed.read_buffer())
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.framed.get_ref()
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
