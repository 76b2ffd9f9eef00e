//! placeholder: the LSM engine (issue 5).
