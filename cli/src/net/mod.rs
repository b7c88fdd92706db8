//! Talking to registries: the native HTTP driver over the core's transfer kernel
//! ([`client`]), where credentials come from ([`creds`]), which certificates are trusted
//! ([`tls`]), and upload state kept across runs ([`resume`]).

pub mod client;
pub mod creds;
pub mod resume;
pub mod tls;
