//! Frames over a serial line: `shapecast_wire::serial` COBS framing with
//! CRC-32 (and optional PSK tags), over a real serial port (`serialport`
//! without libudev) or any `Read`/`Write` byte stream.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use shapecast_wire::auth::Key;
use shapecast_wire::serial::{
    encode_frame, encode_frame_auth, max_encoded_len_auth, FrameReader, ReaderStats,
};

use crate::{LinkError, Transport};

/// Largest frame payload the serial receiver accepts by default (bytes).
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024;

/// Opens a serial port `path` at `baud`, 8N1, no flow control, with a read
/// timeout of `timeout` (reads return `TimedOut` when nothing arrives).
pub fn open_port(
    path: &str,
    baud: u32,
    timeout: Duration,
) -> Result<Box<dyn serialport::SerialPort>, LinkError> {
    let port = serialport::new(path, baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(timeout)
        .open()?;
    Ok(port)
}

/// Writes frames onto a byte stream. Use it inside a
/// [`LinkSender`](crate::LinkSender) so a slow UART never blocks the caller.
#[derive(Debug)]
pub struct SerialSender<W: Write + Send + 'static> {
    port: W,
    key: Option<Key>,
    name: String,
    buf: Vec<u8>,
}

impl<W: Write + Send + 'static> SerialSender<W> {
    /// A sender over `port`; with a `key`, frames are authenticated (the
    /// frame id is the replay counter).
    pub fn new(port: W, key: Option<Key>, name: impl Into<String>) -> Self {
        Self {
            port,
            key,
            name: name.into(),
            buf: Vec::new(),
        }
    }

    /// Encodes and writes one frame, then flushes.
    pub fn send_frame(&mut self, seq: u32, payload: &[u8]) -> Result<(), LinkError> {
        self.buf.clear();
        self.buf.resize(max_encoded_len_auth(payload.len()), 0);
        let n = match &self.key {
            Some(k) => encode_frame_auth(payload, k, seq, &mut self.buf)?,
            None => encode_frame(payload, &mut self.buf)?,
        };
        self.port.write_all(&self.buf[..n])?;
        self.port.flush()?;
        Ok(())
    }

    /// The underlying stream (e.g. to inject bytes in tests).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.port
    }
}

impl<W: Write + Send + 'static> Transport for SerialSender<W> {
    fn send(&mut self, frame_id: u32, payload: &[u8]) -> Result<(), LinkError> {
        self.send_frame(frame_id, payload)
    }

    fn describe(&self) -> String {
        format!("serial {}", self.name)
    }
}

/// Reads frames from a byte stream. `N` bounds the frame body it accepts
/// (payload + 24 bytes); the reader lives on the heap.
#[derive(Debug)]
pub struct SerialReceiver<R: Read, const N: usize = { DEFAULT_MAX_FRAME + 64 }> {
    port: R,
    reader: Box<FrameReader<N>>,
    buf: Vec<u8>,
    bytes: u64,
}

impl<R: Read, const N: usize> SerialReceiver<R, N> {
    /// A receiver over `port`; with a `key`, only authenticated frames pass.
    pub fn new(port: R, key: Option<Key>) -> Self {
        let reader = match key {
            Some(k) => Box::new(FrameReader::<N>::with_key(k)),
            None => Box::new(FrameReader::<N>::new()),
        };
        Self {
            port,
            reader,
            buf: vec![0; 16 * 1024],
            bytes: 0,
        }
    }

    /// One read from the stream (waiting at most the stream's own timeout);
    /// calls `on_frame` for every frame completed by the bytes read, with the
    /// payload or the reason it was dropped. Returns the bytes read (0 on a
    /// read timeout). End of stream is an `UnexpectedEof` I/O error.
    pub fn poll(
        &mut self,
        on_frame: impl FnMut(Result<&[u8], shapecast_wire::Error>),
    ) -> Result<usize, LinkError> {
        let n = match self.port.read(&mut self.buf) {
            Ok(0) => return Err(LinkError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if crate::is_idle(&e) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        self.bytes += n as u64;
        self.reader.feed(&self.buf[..n], on_frame);
        Ok(n)
    }

    /// Counters of the frame decoder.
    pub fn stats(&self) -> ReaderStats {
        self.reader.stats()
    }

    /// Raw bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_roundtrip_with_noise() {
        let key = Key::new([9; 32]);
        let mut tx = SerialSender::new(Vec::new(), Some(key.clone()), "mem");
        let frames: Vec<Vec<u8>> = (0..20u32)
            .map(|i| (0..i * 37).map(|j| (j * 7 + i) as u8).collect())
            .collect();
        for (i, f) in frames.iter().enumerate() {
            tx.send_frame(i as u32, f).unwrap();
            tx.get_mut().extend_from_slice(b"\x01\x02garbage\x00\xff");
        }
        let bytes = std::mem::take(tx.get_mut());
        let mut rx: SerialReceiver<_, 4096> = SerialReceiver::new(&bytes[..], Some(key));
        let mut got = Vec::new();
        let mut errs = 0;
        loop {
            match rx.poll(|r| match r {
                Ok(p) => got.push(p.to_vec()),
                Err(_) => errs += 1,
            }) {
                Ok(_) => {}
                Err(LinkError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, frames);
        assert!(errs >= 20);
        assert_eq!(rx.stats().frames_ok, 20);
    }
}
