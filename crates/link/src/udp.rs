//! Frames over UDP: `shapecast_wire::fragment` datagrams (at most
//! [`MAX_DATAGRAM`] bytes each, optional PSK tags), reassembled with a
//! fixed-size [`Reassembler`] that only ever hands out whole, CRC-checked
//! frames.

use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use shapecast_wire::auth::Key;
use shapecast_wire::fragment::{Fragmenter, Frame, Reassembler, ReassemblerStats, MAX_DATAGRAM};

use crate::{LinkError, Transport};

/// Frames being reassembled at once by default (all devices together).
pub const DEFAULT_SLOTS: usize = 8;
/// Largest frame accepted by default (bytes).
pub const DEFAULT_MAX_FRAME: usize = 512 * 1024;
/// Default time after which an incomplete frame is dropped (ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Socket receive buffer asked for: forced past `rmem_max` where the process
/// may (Linux, `CAP_NET_ADMIN`), otherwise as much as `rmem_max` allows.
pub const RECV_BUFFER: usize = 16 << 20;

/// Datagrams read per system call.
const BATCH: usize = 64;
/// Bytes per datagram slot (larger than MAX_DATAGRAM, so oversize datagrams
/// are recognised).
const SLOT_BYTES: usize = 2048;

/// Sends frames as fragment datagrams to one destination.
#[derive(Debug)]
pub struct UdpSender {
    socket: UdpSocket,
    dest: SocketAddr,
    device_id: u32,
    key: Option<Key>,
    dgram: Box<[u8; MAX_DATAGRAM]>,
    max_datagram: usize,
    /// Pacing: bytes per second (None = as fast as the socket takes them).
    rate: Option<u64>,
    started: Instant,
    sent_bytes: u64,
}

impl UdpSender {
    /// A sender from an ephemeral local port to `dest`.
    pub fn new(
        dest: impl ToSocketAddrs,
        device_id: u32,
        key: Option<Key>,
    ) -> Result<Self, LinkError> {
        let dest = dest
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let bind: SocketAddr = if dest.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        Ok(Self {
            socket,
            dest,
            device_id,
            key,
            dgram: Box::new([0; MAX_DATAGRAM]),
            max_datagram: MAX_DATAGRAM,
            rate: None,
            started: Instant::now(),
            sent_bytes: 0,
        })
    }

    /// Limits the send rate to `bytes_per_sec` (sleeps between datagrams).
    pub fn with_rate(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.rate = bytes_per_sec.filter(|&r| r > 0);
        self
    }

    /// Uses datagrams of at most `max` bytes (e.g. for a small-MTU link).
    pub fn with_max_datagram(mut self, max: usize) -> Self {
        self.max_datagram = max.min(MAX_DATAGRAM);
        self
    }

    /// Local address of the socket.
    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        Ok(self.socket.local_addr()?)
    }

    /// Fragments `payload` as frame `frame_id` and sends every datagram.
    pub fn send_frame(&mut self, frame_id: u32, payload: &[u8]) -> Result<(), LinkError> {
        let key = self.key.clone();
        let mut frag = Fragmenter::new(self.device_id, frame_id, payload, key.as_ref())?;
        if self.max_datagram < MAX_DATAGRAM {
            frag = frag.with_max_datagram(self.max_datagram)?;
        }
        while let Some(n) = frag.next_datagram(&mut self.dgram) {
            self.pace();
            self.socket.send_to(&self.dgram[..n], self.dest)?;
            self.sent_bytes += n as u64;
        }
        Ok(())
    }

    fn pace(&mut self) {
        let Some(rate) = self.rate else { return };
        let due = Duration::from_secs_f64(self.sent_bytes as f64 / rate as f64);
        let el = self.started.elapsed();
        if due > el {
            std::thread::sleep(due - el);
        } else if el > due + Duration::from_secs(1) {
            // Idle for a while: don't let a burst "catch up" unpaced.
            self.started = Instant::now();
            self.sent_bytes = 0;
        }
    }
}

impl Transport for UdpSender {
    fn send(&mut self, frame_id: u32, payload: &[u8]) -> Result<(), LinkError> {
        self.send_frame(frame_id, payload)
    }

    fn describe(&self) -> String {
        format!("udp {}", self.dest)
    }
}

/// Counters of a [`UdpReceiver`] beyond those of the reassembler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams read from the socket.
    pub datagrams: u64,
    /// Bytes of those datagrams.
    pub bytes: u64,
    /// Datagrams longer than [`MAX_DATAGRAM`] (dropped unread).
    pub oversize: u64,
    /// Datagrams the reassembler refused (malformed, bad tag, ...).
    pub rejected: u64,
    /// Reassembler counters.
    pub reassembler: ReassemblerStats,
}

/// Receives and reassembles frames from any number of senders. `SLOTS`
/// frames can be in flight at once (all senders together), each at most
/// `MAX_FRAME` bytes; memory is fixed at about `SLOTS * MAX_FRAME`.
///
/// Construct it on a thread with a stack larger than its size (the
/// reassembler may be built on the stack before being boxed).
#[derive(Debug)]
pub struct UdpReceiver<
    const SLOTS: usize = DEFAULT_SLOTS,
    const MAX_FRAME: usize = DEFAULT_MAX_FRAME,
> {
    socket: UdpSocket,
    re: Box<Reassembler<SLOTS, MAX_FRAME>>,
    epoch: Instant,
    /// BATCH datagram slots of SLOT_BYTES each.
    buf: Vec<u8>,
    lens: Vec<(usize, SocketAddr)>,
    stats: UdpStats,
}

impl<const SLOTS: usize, const MAX_FRAME: usize> UdpReceiver<SLOTS, MAX_FRAME> {
    /// Binds `addr` (asks for an [`RECV_BUFFER`]-byte socket buffer).
    pub fn bind(
        addr: impl ToSocketAddrs,
        key: Option<Key>,
        timeout_ms: u64,
    ) -> Result<Self, LinkError> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Best effort: a large buffer rides out bursts, floods and moments
        // when the receiving thread is not scheduled.
        #[cfg(target_os = "linux")]
        let forced = nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::RcvBufForce,
            &RECV_BUFFER,
        )
        .is_ok();
        #[cfg(not(target_os = "linux"))]
        let forced = false;
        if !forced {
            if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
                log::warn!("could not enlarge UDP receive buffer: {e}");
            }
        }
        sock.bind(&addr.into())?;
        let socket: UdpSocket = sock.into();
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(Self {
            socket,
            re: Reassembler::new_boxed(key, timeout_ms),
            epoch: Instant::now(),
            buf: vec![0; BATCH * SLOT_BYTES],
            lens: vec![(0, ([0, 0, 0, 0], 0).into()); BATCH],
            stats: UdpStats::default(),
        })
    }

    /// Local address (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        Ok(self.socket.local_addr()?)
    }

    /// Size of the socket receive buffer the kernel granted.
    pub fn recv_buffer_size(&self) -> Result<usize, LinkError> {
        Ok(socket2::SockRef::from(&self.socket).recv_buffer_size()?)
    }

    /// Sets how long [`poll`](Self::poll) waits for the first datagram.
    pub fn set_timeout(&self, t: Duration) -> Result<(), LinkError> {
        self.socket
            .set_read_timeout(Some(t.max(Duration::from_micros(1))))?;
        Ok(())
    }

    /// Reads up to `max_batch` datagrams and calls `on_frame` for every frame
    /// they complete. Waits at most the socket timeout for the first
    /// datagram, then takes only what is already queued: a read that drains
    /// the socket ends the batch, so a slow trickle of datagrams never keeps
    /// the caller in here (its stop flag and statistics stay live). Returns
    /// the number of datagrams read.
    pub fn poll(
        &mut self,
        max_batch: usize,
        mut on_frame: impl FnMut(&Frame<'_>, SocketAddr),
    ) -> Result<usize, LinkError> {
        let mut n_read = 0;
        let max_batch = max_batch.max(1);
        while n_read < max_batch {
            let want = (max_batch - n_read).min(BATCH);
            let got = self.read_batch(want)?;
            for i in 0..got {
                let (n, from) = self.lens[i];
                n_read += 1;
                self.stats.datagrams += 1;
                self.stats.bytes += n as u64;
                if n > MAX_DATAGRAM {
                    self.stats.oversize += 1;
                    continue;
                }
                let now = self.epoch.elapsed().as_millis() as u64;
                let d = &self.buf[i * SLOT_BYTES..i * SLOT_BYTES + n];
                match self.re.push(d, now) {
                    Ok(Some(frame)) => on_frame(&frame, from),
                    Ok(None) => {}
                    Err(_) => self.stats.rejected += 1,
                }
            }
            if got < want {
                // The socket is drained (or timed out): return to the caller.
                break;
            }
        }
        Ok(n_read)
    }

    /// Reads up to `max` datagrams into `buf` (slot i at `i * SLOT_BYTES`)
    /// and their lengths/senders into `lens`; 0 on timeout.
    #[cfg(target_os = "linux")]
    fn read_batch(&mut self, max: usize) -> Result<usize, LinkError> {
        use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;
        // One system call for up to BATCH datagrams: under a flood the
        // receiver must stay cheaper per datagram than the sender.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(max, None);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .buf
            .chunks_mut(SLOT_BYTES)
            .take(max)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        let res = recvmmsg(
            self.socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        );
        match res {
            Ok(msgs) => {
                let mut k = 0;
                for m in msgs {
                    let from = m
                        .address
                        .and_then(|a: SockaddrStorage| {
                            if let Some(v4) = a.as_sockaddr_in() {
                                Some(SocketAddr::V4((*v4).into()))
                            } else {
                                a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
                            }
                        })
                        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
                    self.lens[k] = (m.bytes, from);
                    k += 1;
                }
                Ok(k)
            }
            // Timeout, signal, or (Linux) the ICMP error of an earlier send.
            Err(
                nix::errno::Errno::EAGAIN
                | nix::errno::Errno::EINTR
                | nix::errno::Errno::ECONNREFUSED,
            ) => Ok(0),
            Err(e) => Err(LinkError::Io(e.into())),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn read_batch(&mut self, _max: usize) -> Result<usize, LinkError> {
        loop {
            match self.socket.recv_from(&mut self.buf[..SLOT_BYTES]) {
                Ok((n, from)) => {
                    self.lens[0] = (n, from);
                    return Ok(1);
                }
                Err(e) if crate::is_idle(&e) => return Ok(0),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> UdpStats {
        UdpStats {
            reassembler: self.re.stats(),
            ..self.stats
        }
    }
}
