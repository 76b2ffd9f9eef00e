//! The built-in sequential specifications.

pub mod cas_register;
pub mod kv_append;
pub mod register;
