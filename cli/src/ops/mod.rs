//! Operations the commands are made of: turning inputs into layers ([`inputs`], [`build`],
//! [`modelcar`], [`zstdenc`]), and running the core's image workflows over the stores
//! ([`flows`], [`resolve`], [`blobs`], [`push`]).

pub mod blobs;
pub mod build;
pub mod flows;
pub mod inputs;
pub mod modelcar;
pub mod peek;
pub mod push;
pub mod resolve;
pub mod zstdenc;
