//! A `Decoder` for the server role on arbitrary configuration and input; see
//! `common/decoder.rs` for the input layout and the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use silverback::proto::Role;

#[path = "../common/decoder.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::check(Role::Server, data));
