//! The snapshot stream: what `neuraphage-worker --snapshot`, run inside the task's sandbox, writes to its stdout for
//! the supervisor to turn into a commit.
//!
//! The stream is a sequence of frames (the [`crate::frame`] codec: 4-byte big-endian length, MessagePack body), each
//! one [`SnapshotFrame`]: an [`SnapshotFrame::Entry`] announces a file or symlink (its path bytes relative to the
//! worktree, its git mode and its size), then that many bytes follow in [`SnapshotFrame::Data`] chunks of at most
//! [`SNAPSHOT_CHUNK`] bytes; [`SnapshotFrame::Note`]s say what was left out and why; [`SnapshotFrame::End`] closes a
//! complete stream. The supervisor trusts none of it: every path, mode and size is checked against the bounds below.

use serde::{Deserialize, Serialize};

/// Largest data chunk in one frame.
pub const SNAPSHOT_CHUNK: usize = 256 * 1024;

/// Largest frame body of the stream (a chunk and its envelope, or an entry with the longest path).
pub const MAX_SNAPSHOT_FRAME: usize = SNAPSHOT_CHUNK + 64 * 1024;

/// Largest path (bytes) of an entry.
pub const MAX_SNAPSHOT_PATH: usize = 4096;

/// Largest symlink target (bytes).
pub const MAX_SNAPSHOT_LINK: u64 = 4096;

/// Largest file a snapshot takes; bigger ones are left out (with a note).
pub const MAX_SNAPSHOT_FILE: u64 = 100 * 1024 * 1024;

/// Largest sum of file sizes in one snapshot.
pub const MAX_SNAPSHOT_TOTAL: u64 = 2 * 1024 * 1024 * 1024;

/// Most entries in one snapshot.
pub const MAX_SNAPSHOT_ENTRIES: u64 = 200_000;

/// Most notes in one snapshot (the rest are counted in the last one).
pub const MAX_SNAPSHOT_NOTES: usize = 100;

/// A `.gitignore` bigger than this is not used (and a note says so).
pub const MAX_GITIGNORE_BYTES: u64 = 1024 * 1024;

/// The git mode of a regular file.
pub const MODE_FILE: u32 = 0o100644;
/// The git mode of an executable file.
pub const MODE_EXECUTABLE: u32 = 0o100755;
/// The git mode of a symbolic link (its data is the target).
pub const MODE_SYMLINK: u32 = 0o120000;

/// One frame of the snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SnapshotFrame {
    /// A file or symlink; `size` bytes of data follow in [`SnapshotFrame::Data`] frames.
    Entry {
        /// Its path relative to the worktree, `/`-separated, as bytes (file names need not be UTF-8).
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// [`MODE_FILE`], [`MODE_EXECUTABLE`] or [`MODE_SYMLINK`].
        mode: u32,
        /// How many data bytes follow.
        size: u64,
    },
    /// The next chunk of the current entry's data.
    Data {
        /// At most [`SNAPSHOT_CHUNK`] bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Something the walk left out or found, in words (e.g. a `.gitignore` too big to use, a nested `.git`).
    Note {
        /// What.
        note: String,
        /// The path it is about, relative to the worktree, if any.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// The walk finished; a stream without it is incomplete and refused.
    End {
        /// Entries sent.
        entries: u64,
        /// Data bytes sent.
        bytes: u64,
    },
}

/// Writes snapshot frames to a blocking byte stream (the helper's stdout) with the frame codec.
#[derive(Debug)]
pub struct SnapshotWriter<W> {
    out: W,
    codec: crate::FrameCodec,
    buf: bytes::BytesMut,
}

impl<W: std::io::Write> SnapshotWriter<W> {
    /// Frames to `out`.
    pub fn new(out: W) -> Self {
        SnapshotWriter { out, codec: crate::FrameCodec::new(MAX_SNAPSHOT_FRAME), buf: bytes::BytesMut::new() }
    }

    /// Write one frame (not flushed: call [`SnapshotWriter::flush`] at the end).
    pub fn send(&mut self, frame: &SnapshotFrame) -> crate::Result<()> {
        use tokio_util::codec::Encoder;
        self.buf.clear();
        self.codec.encode(crate::frame::encode(frame)?, &mut self.buf)?;
        self.out.write_all(&self.buf)?;
        Ok(())
    }

    /// Flush what was written.
    pub fn flush(&mut self) -> crate::Result<()> {
        Ok(self.out.flush()?)
    }
}

/// Reads snapshot frames from a blocking byte stream (the helper's stdout), refusing frames over
/// [`MAX_SNAPSHOT_FRAME`] before buffering them.
#[derive(Debug)]
pub struct SnapshotReader<R> {
    input: R,
    codec: crate::FrameCodec,
    buf: bytes::BytesMut,
    eof: bool,
}

impl<R: std::io::Read> SnapshotReader<R> {
    /// Frames from `input`.
    pub fn new(input: R) -> Self {
        SnapshotReader {
            input,
            codec: crate::FrameCodec::new(MAX_SNAPSHOT_FRAME),
            buf: bytes::BytesMut::with_capacity(64 * 1024),
            eof: false,
        }
    }

    /// The next frame; `Ok(None)` when the stream ended cleanly between frames.
    pub fn next_frame(&mut self) -> crate::Result<Option<SnapshotFrame>> {
        use tokio_util::codec::Decoder;
        loop {
            let frame =
                if self.eof { self.codec.decode_eof(&mut self.buf)? } else { self.codec.decode(&mut self.buf)? };
            if let Some(body) = frame {
                return crate::frame::decode(&body).map(Some);
            }
            if self.eof {
                return Ok(None);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = loop {
                match self.input.read(&mut chunk) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if n == 0 {
                self.eof = true;
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_through_a_byte_stream_and_oversized_ones_are_refused() {
        let mut out = Vec::new();
        let mut w = SnapshotWriter::new(&mut out);
        let frames = vec![
            SnapshotFrame::Entry { path: b"a/b".to_vec(), mode: MODE_FILE, size: SNAPSHOT_CHUNK as u64 },
            SnapshotFrame::Data { bytes: vec![0xff; SNAPSHOT_CHUNK] },
            SnapshotFrame::Note { note: "n".into(), path: Vec::new() },
            SnapshotFrame::End { entries: 1, bytes: SNAPSHOT_CHUNK as u64 },
        ];
        for f in &frames {
            w.send(f).unwrap();
        }
        w.flush().unwrap();
        let mut r = SnapshotReader::new(&out[..]);
        let mut back = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            back.push(f);
        }
        assert_eq!(back, frames);
        // A stream cut in the middle of a frame is an error, not a short snapshot.
        let mut r = SnapshotReader::new(&out[..out.len() - 3]);
        let mut result = Ok(None);
        for _ in 0..10 {
            result = r.next_frame();
            if !matches!(result, Ok(Some(_))) {
                break;
            }
        }
        assert!(matches!(result, Err(crate::IpcError::Truncated { .. })), "{result:?}");
        // An announced length over the bound is refused before its body is read.
        let mut huge = ((MAX_SNAPSHOT_FRAME + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(SnapshotReader::new(&huge[..]).next_frame(), Err(crate::IpcError::Oversized { .. })));
    }
}
