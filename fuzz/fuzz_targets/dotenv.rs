//! `.env` uploads: parsing never panics, every value comes back byte for byte when it is
//! written out quoted again, and nothing is ever expanded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustploy_actors::dotenv;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pairs) = dotenv::parse(text) else {
        return;
    };
    // A value written back in single quotes (when it holds none) parses to itself: what was
    // stored is what the file said, with no substitution.
    for (key, value) in pairs {
        if value.contains('\'') || value.contains('\n') || value.contains('\r') {
            continue;
        }
        let again = dotenv::parse(&format!("{key}='{value}'\n")).expect("a quoted pair parses");
        assert_eq!(again, vec![(key, value)]);
    }
});
