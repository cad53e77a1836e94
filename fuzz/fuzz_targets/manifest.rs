//! `rustploy.yaml` as a repository may write it: parsing never panics, and an error never
//! echoes the text it failed on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustploy_actors::deploy::manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = manifest::parse(text) {
        let _ = e.to_string();
    }
});
