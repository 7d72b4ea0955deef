//! Opening a channel with its first methods pipelined, shared by every
//! piece that opens channels. No state of its own.

use carehare_core::Connection;
use carehare_core::method::Method;
use carehare_core::types::{ChannelId, OpId};

use crate::error::Error;

/// Opens a channel and pipelines `methods` on it (each expecting a reply),
/// returning the channel and the last method's op. If a method can't be
/// queued, the channel is closed again so no id leaks; the caller wakes the
/// driver to send that close.
pub(crate) fn open_with(
    conn: &mut Connection,
    methods: impl IntoIterator<Item = Method>,
) -> Result<(ChannelId, OpId), Error> {
    let (ch, mut last) = conn.open_channel()?;
    for method in methods {
        match conn.call(ch, method) {
            Ok(op) => last = op,
            Err(e) => {
                let _ = conn.close_channel(ch);
                return Err(e.into());
            }
        }
    }
    Ok((ch, last))
}
