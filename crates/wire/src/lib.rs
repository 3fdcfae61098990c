//! shapecast wire format. See SPEC.md beside this crate.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod error;
pub mod pointcode;

pub use error::Error;
