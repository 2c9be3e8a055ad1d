//! The control socket: how `unitwarden status`, `pause`, `resume` and `retry` talk to the
//! running daemon. [`protocol`] is the wire format, [`server`] the daemon's end (it never
//! blocks the watch loop), [`client`] the command line's, [`render`] the human table.

pub mod client;
pub mod protocol;
pub mod render;
pub mod server;
