//! The request-response codec: one frame per request and one per response.
//!
//! A stream carries exactly one frame, ended by closing the write side, so no length prefix
//! is needed (and none can lie). The reader takes at most `max_frame + 1` bytes: a frame
//! over the limit is detected without reading (or allocating) more than that, and refused
//! with an I/O error that fails the stream. Decoding is *not* done here: the codec only
//! frames bytes, and the event loop decodes them with [`vouchnet_protocol::Frame::decode`],
//! so that a frame that does not decode can still be answered with an `ErrorReply`
//! (for example "unsupported version") instead of a dropped stream.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;
use vouchnet_protocol::{DecodeError, Frame, Limits};

/// Direct pairing, key proof and sealed text.
pub const PAIR_PROTOCOL: StreamProtocol = StreamProtocol::new("/vouchnet/pair/1");
/// Proxy pairing and rekey. A node without proxy pairing does not offer it, so a voucher
/// sees "unsupported protocol" rather than a request that is never answered.
pub const PROXY_PAIR_PROTOCOL: StreamProtocol = StreamProtocol::new("/vouchnet/proxy-pair/1");

/// The bytes of one frame, at most `max_frame` long. Decode with [`WireFrame::decode`].
#[derive(Clone, PartialEq, Eq)]
pub struct WireFrame(Vec<u8>);

impl WireFrame {
    /// Encodes a frame for sending.
    pub fn encode(frame: &Frame) -> Self {
        WireFrame(frame.encode())
    }

    /// Raw bytes, sent as they are. Only tests use it, to send frames no honest node
    /// would (a newer version, garbage).
    pub fn raw(bytes: Vec<u8>) -> Self {
        WireFrame(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes within `limits`.
    pub fn decode(&self, limits: &Limits) -> Result<Frame, DecodeError> {
        Frame::decode(&self.0, limits)
    }
}

impl std::fmt::Debug for WireFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireFrame({} bytes)", self.0.len())
    }
}

/// Frames requests and responses, bounded by `max_frame`.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(Limits::default().max_frame)
    }
}

/// Reads to end of stream, at most `max + 1` bytes; more than `max` is an error.
async fn read_bounded<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<WireFrame> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    io.take(limit).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame exceeds {max} bytes"),
        ));
    }
    Ok(WireFrame(buf))
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: WireFrame) -> io::Result<()> {
    io.write_all(&frame.0).await?;
    io.close().await
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = WireFrame;
    type Response = WireFrame;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireFrame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_frame).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireFrame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.max_frame).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: WireFrame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: WireFrame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;
    use vouchnet_protocol::messages::{Ack, Message};

    fn read(codec: &mut FrameCodec, bytes: Vec<u8>) -> io::Result<WireFrame> {
        futures::executor::block_on(codec.read_request(&PAIR_PROTOCOL, &mut Cursor::new(bytes)))
    }

    #[test]
    fn a_frame_round_trips() {
        let frame = Frame::new(Message::Ack(Ack {}));
        let mut out = Cursor::new(Vec::new());
        let mut codec = FrameCodec::default();
        futures::executor::block_on(codec.write_response(
            &PAIR_PROTOCOL,
            &mut out,
            WireFrame::encode(&frame),
        ))
        .unwrap();
        let wire = read(&mut codec, out.into_inner()).unwrap();
        assert_eq!(wire.decode(&Limits::default()).unwrap(), frame);
    }

    #[test]
    fn a_frame_of_exactly_the_limit_is_read() {
        let mut codec = FrameCodec::new(16);
        assert_eq!(read(&mut codec, vec![7; 16]).unwrap().as_bytes().len(), 16);
    }

    #[test]
    fn one_byte_over_the_limit_is_refused_without_reading_the_rest() {
        let mut codec = FrameCodec::new(16);
        let err = read(&mut codec, vec![7; 17]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A huge frame costs no more than the limit: the reader stops at max + 1.
        let mut cursor = Cursor::new(vec![0u8; 1 << 20]);
        let err = futures::executor::block_on(codec.read_request(&PAIR_PROTOCOL, &mut cursor))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(cursor.position(), 17);
    }

    #[test]
    fn undecodable_bytes_reach_the_decoder_as_a_typed_error() {
        let mut codec = FrameCodec::default();
        let wire = read(&mut codec, Vec::new()).unwrap();
        assert_eq!(wire.decode(&Limits::default()), Err(DecodeError::Empty));
    }
}
