//! Opening the configured link (the transports of `shapecast_link`).

use anyhow::Context;
use shapecast_link::LinkSender;
use shapecast_wire::auth::Key;

use crate::config::{LinkConfig, LinkKind};

/// Largest message handed to the link (a frame message of the biggest head fits).
pub const MAX_PAYLOAD: usize = 4 << 20;

/// Reads a pre-shared key file: 64 hex digits (`Key::load`: at most 4 KiB are read).
pub fn read_key(path: &std::path::Path) -> anyhow::Result<Key> {
    Key::load(path).with_context(|| format!("reading the pre-shared key file {}", path.display()))
}

/// Opens the link of the configuration.
pub fn open(c: &LinkConfig, device_id: u32) -> anyhow::Result<LinkSender> {
    let key = c.psk_file.as_deref().map(read_key).transpose()?;
    match c.kind {
        LinkKind::Udp => {
            let t = shapecast_link::udp::UdpSender::new(c.address.as_str(), device_id, key)
                .with_context(|| format!("opening UDP to {}", c.address))?;
            LinkSender::new(t, MAX_PAYLOAD).context("starting the link writer")
        }
        LinkKind::Serial => {
            let port = shapecast_link::serial::open_port(
                &c.serial_device,
                c.baud,
                std::time::Duration::from_millis(500),
            )
            .with_context(|| {
                format!("opening serial port {} at {} baud", c.serial_device, c.baud)
            })?;
            let name = format!("serial {} @ {} baud", c.serial_device, c.baud);
            let t = shapecast_link::serial::SerialSender::new(port, key, name);
            // a serial frame must fit the receiver's default maximum
            LinkSender::new(t, shapecast_link::serial::DEFAULT_MAX_FRAME)
                .context("starting the link writer")
        }
    }
}
