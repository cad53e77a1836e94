//! A GitHub webhook delivery as any sender could make it: the signature header and the body
//! are the fuzzer's. Checking never panics, and a body the fuzzer did not sign with the
//! secret is never accepted.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rustploy_server::http::webhook_api::check_offline;
use sha2::Sha256;

const SECRET: &[u8] = b"a webhook secret for fuzzing";

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// `push`, `ping` or anything else a sender writes.
    event: &'a str,
    /// Sign the body with the real secret (so the parsing behind the check is reached), or
    /// send the fuzzer's own header.
    sign: bool,
    header: &'a [u8],
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let event = match input.event.len() % 3 {
        0 => "push",
        1 => "ping",
        _ => input.event,
    };
    if input.sign {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
        mac.update(input.body);
        let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        check_offline(event, header.as_bytes(), input.body, SECRET);
    } else {
        // The fuzzer cannot forge an HMAC: whatever it sends is refused.
        assert!(!check_offline(event, input.header, input.body, SECRET));
    }
});
