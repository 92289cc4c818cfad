//! An IO wrapper that repairs the `:authority` of client requests before h2
//! reads them (see the module doc of [`super`] for why).
//!
//! It parses the client-to-server byte stream as HTTP/2 frames (RFC 9113
//! §4.1): every frame but HEADERS and CONTINUATION passes through
//! unchanged, as its bytes arrive. A header block (HEADERS plus its
//! CONTINUATIONs, which must follow on the same stream with nothing in
//! between, §6.10) is collected, its padding stripped (§6.2), decoded with
//! an HPACK decoder that tracks the client's dynamic table (RFC 7541), and
//! re-encoded as literals without indexing, so the server's decoder never
//! holds a dynamic entry. The new block keeps the stream, END_STREAM and
//! the PRIORITY fields, and is split into frames of at most
//! [`MAX_FRAME_SIZE`] (the server's `SETTINGS_MAX_FRAME_SIZE`).
//!
//! Anything malformed (a bad preface, PUSH_PROMISE from a client, an
//! interrupted header block, bad padding, an HPACK error, a block or header
//! list over the limit) is an `InvalidData` read error: h2 then closes the
//! connection. Nothing here panics on input.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::REPLACEMENT_AUTHORITY;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The frame size the server advertises and the rewriter emits at most.
pub(crate) const MAX_FRAME_SIZE: usize = 16_384;
/// The HPACK dynamic table size the server allows the client's encoder
/// (`SETTINGS_HEADER_TABLE_SIZE`; the server keeps the default).
pub(crate) const HEADER_TABLE_SIZE: usize = 4_096;

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const READ_CHUNK: usize = 8_192;
/// Pad length byte, at most 255 padding bytes, and the priority fields.
const MAX_FRAME_OVERHEAD: usize = 1 + 255 + 5;

/// Why the client's byte stream was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RewriteError {
    #[error("the connection preface is not HTTP/2's")]
    Preface,
    #[error("a client sent PUSH_PROMISE")]
    PushPromise,
    #[error("header block on stream {stream} interrupted by a frame of type {frame_type:#x}")]
    Interrupted { stream: u32, frame_type: u8 },
    #[error("CONTINUATION without an open header block")]
    StrayContinuation,
    #[error("HEADERS on stream 0")]
    StreamZero,
    #[error("HEADERS frame padding or priority does not fit its payload")]
    BadPadding,
    #[error("header block is over {limit} bytes")]
    BlockTooLarge { limit: usize },
    #[error("header list is over {limit} bytes")]
    ListTooLarge { limit: usize },
    #[error("HPACK decoding failed: {0}")]
    Hpack(String),
}

impl From<RewriteError> for io::Error {
    fn from(e: RewriteError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes.get(..FRAME_HEADER_LEN)? else {
            return None;
        };
        Some(Self {
            len: usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2),
            kind,
            flags,
            stream: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
        })
    }
}

#[derive(Debug)]
enum State {
    Preface,
    FrameHeader,
    Passthrough { remaining: usize },
    Payload(FrameHead),
}

/// The header block being collected.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragments: Vec<u8>,
}

/// The rewriting side of a connection: client bytes in, repaired bytes out.
/// Separate from the IO so tests can feed it arbitrary splits.
pub(crate) struct Rewriter {
    state: State,
    decoder: Decoder<'static>,
    block: Option<OpenBlock>,
    max_list: usize,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Rewriter {
    /// A rewriter expecting the connection preface; header lists (and
    /// encoded blocks) over `max_list` bytes are refused.
    pub(crate) fn new(max_list: usize) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            state: State::Preface,
            decoder,
            block: None,
            max_list,
        }
    }

    /// Consumes what it can of `input` into `out`. Leaves an incomplete
    /// frame header, preface or header-carrying frame in `input`.
    pub(crate) fn process(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), RewriteError> {
        loop {
            match self.state {
                State::Preface => {
                    let Some(got) = input.get(..PREFACE.len()) else {
                        if !PREFACE.starts_with(input.as_ref()) {
                            return Err(RewriteError::Preface);
                        }
                        return Ok(());
                    };
                    if got != PREFACE {
                        return Err(RewriteError::Preface);
                    }
                    out.put(input.split_to(PREFACE.len()));
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    let Some(head) = FrameHead::parse(input) else {
                        return Ok(());
                    };
                    self.on_frame_head(head)?;
                    if let State::Passthrough { .. } = self.state {
                        out.put(input.split_to(FRAME_HEADER_LEN));
                    } else {
                        input.advance(FRAME_HEADER_LEN);
                    }
                }
                State::Passthrough { remaining } => {
                    if remaining == 0 {
                        self.state = State::FrameHeader;
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let n = remaining.min(input.len());
                    out.put(input.split_to(n));
                    self.state = State::Passthrough {
                        remaining: remaining.saturating_sub(n),
                    };
                }
                State::Payload(head) => {
                    if input.len() < head.len {
                        return Ok(());
                    }
                    let payload = input.split_to(head.len);
                    self.on_payload(head, &payload, out)?;
                    self.state = State::FrameHeader;
                }
            }
        }
    }

    fn on_frame_head(&mut self, head: FrameHead) -> Result<(), RewriteError> {
        if let Some(block) = &self.block
            && (head.kind != TYPE_CONTINUATION || head.stream != block.stream)
        {
            return Err(RewriteError::Interrupted {
                stream: block.stream,
                frame_type: head.kind,
            });
        }
        match head.kind {
            TYPE_HEADERS | TYPE_CONTINUATION => {
                if head.kind == TYPE_CONTINUATION && self.block.is_none() {
                    return Err(RewriteError::StrayContinuation);
                }
                if head.stream == 0 {
                    return Err(RewriteError::StreamZero);
                }
                let collected = self.block.as_ref().map_or(0, |b| b.fragments.len());
                // A frame's payload bounds its fragment: refuse before
                // buffering anything over the limit (CONTINUATION floods).
                if head.len.saturating_add(collected)
                    > self.max_list.saturating_add(MAX_FRAME_OVERHEAD)
                {
                    return Err(RewriteError::BlockTooLarge {
                        limit: self.max_list,
                    });
                }
                self.state = State::Payload(head);
            }
            TYPE_PUSH_PROMISE => return Err(RewriteError::PushPromise),
            _ => {
                self.state = State::Passthrough {
                    remaining: head.len,
                }
            }
        }
        Ok(())
    }

    fn on_payload(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), RewriteError> {
        let fragment = if head.kind == TYPE_HEADERS {
            let mut rest = payload;
            let pad = if head.flags & FLAG_PADDED != 0 {
                let (&pad, tail) = rest.split_first().ok_or(RewriteError::BadPadding)?;
                rest = tail;
                usize::from(pad)
            } else {
                0
            };
            let priority = if head.flags & FLAG_PRIORITY != 0 {
                let (fields, tail) = rest.split_at_checked(5).ok_or(RewriteError::BadPadding)?;
                rest = tail;
                let mut p = [0u8; 5];
                p.copy_from_slice(fields);
                Some(p)
            } else {
                None
            };
            // §6.2: padding that exceeds the remaining payload is a
            // PROTOCOL_ERROR.
            let end = rest
                .len()
                .checked_sub(pad)
                .ok_or(RewriteError::BadPadding)?;
            let fragment = rest.get(..end).ok_or(RewriteError::BadPadding)?;
            self.block = Some(OpenBlock {
                stream: head.stream,
                end_stream: head.flags & FLAG_END_STREAM != 0,
                priority,
                fragments: Vec::with_capacity(fragment.len()),
            });
            fragment
        } else {
            payload
        };
        let block = self.block.as_mut().ok_or(RewriteError::StrayContinuation)?;
        if block.fragments.len().saturating_add(fragment.len()) > self.max_list {
            return Err(RewriteError::BlockTooLarge {
                limit: self.max_list,
            });
        }
        block.fragments.extend_from_slice(fragment);
        if head.flags & FLAG_END_HEADERS == 0 {
            return Ok(());
        }
        let block = self.block.take().ok_or(RewriteError::StrayContinuation)?;
        let encoded = self.reencode(&block.fragments)?;
        emit(&block, &encoded, out);
        Ok(())
    }

    /// Decodes one complete header block and re-encodes it statelessly,
    /// replacing an `:authority` h2 would refuse.
    fn reencode(&mut self, fragments: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut encoded = Vec::with_capacity(fragments.len().saturating_add(16));
        let mut size = 0usize;
        let mut too_large = false;
        let limit = self.max_list;
        self.decoder
            .decode_with_cb(fragments, |name, value| {
                // RFC 9113 §6.5.2: each field counts name + value + 32.
                size = size
                    .saturating_add(name.len())
                    .saturating_add(value.len())
                    .saturating_add(32);
                if size > limit {
                    too_large = true;
                    return;
                }
                let value: &[u8] = if name.as_ref() == b":authority"
                    && http::uri::Authority::try_from(value.as_ref()).is_err()
                {
                    REPLACEMENT_AUTHORITY.as_bytes()
                } else {
                    value.as_ref()
                };
                literal_without_indexing(&name, value, &mut encoded);
            })
            .map_err(|e| RewriteError::Hpack(e.to_string()))?;
        if too_large {
            return Err(RewriteError::ListTooLarge { limit });
        }
        Ok(encoded)
    }
}

/// RFC 7541 §6.2.2, new name: `0000 0000`, then name and value as raw
/// string literals (H = 0).
fn literal_without_indexing(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    for s in [name, value] {
        // Writing into a Vec cannot fail.
        let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// Writes `encoded` as one HEADERS frame and as many CONTINUATION frames as
/// [`MAX_FRAME_SIZE`] requires.
fn emit(block: &OpenBlock, encoded: &[u8], out: &mut BytesMut) {
    let first_room = MAX_FRAME_SIZE.saturating_sub(if block.priority.is_some() { 5 } else { 0 });
    let (first, mut rest) = encoded.split_at(first_room.min(encoded.len()));
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let prio_len = block.priority.map_or(0, |p| p.len());
    frame_head(
        out,
        first.len().saturating_add(prio_len),
        TYPE_HEADERS,
        flags,
        block.stream,
    );
    if let Some(p) = block.priority {
        out.put_slice(&p);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(MAX_FRAME_SIZE.min(rest.len()));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        frame_head(out, chunk.len(), TYPE_CONTINUATION, flags, block.stream);
        out.put_slice(chunk);
    }
}

fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    // `len` is at most MAX_FRAME_SIZE (< 2^24).
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    let [_, l0, l1, l2] = len;
    out.put_slice(&[l0, l1, l2, kind, flags]);
    out.put_u32(stream & 0x7fff_ffff);
}

/// A server-side IO whose reads come through a [`Rewriter`]; writes pass
/// through unchanged.
#[derive(Debug)]
pub(crate) struct AuthorityRewriter<IO> {
    io: IO,
    rewriter: Rewriter,
    raw: BytesMut,
    out: BytesMut,
    eof: bool,
}

impl<IO> AuthorityRewriter<IO> {
    /// Wraps `io`; `preface_read` is the connection preface when the
    /// caller has already read it from `io`.
    pub(crate) fn new(io: IO, max_list: usize, preface_read: &[u8]) -> Self {
        let mut raw = BytesMut::with_capacity(READ_CHUNK);
        raw.extend_from_slice(preface_read);
        Self {
            io,
            rewriter: Rewriter::new(max_list),
            raw,
            out: BytesMut::new(),
            eof: false,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityRewriter<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = buf.remaining().min(this.out.len());
                buf.put_slice(&this.out.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.rewriter.process(&mut this.raw, &mut this.out)?;
            if !this.out.is_empty() {
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(read.filled());
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityRewriter<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
