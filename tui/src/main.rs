//! rustploy-tui: the terminal operator client over /api/v1.
//!
//! Not implemented yet: the terminal UI work will fill this in. Until then it says so and exits
//! with an error.

fn main() {
    eprintln!("rustploy-tui: not implemented yet; use the API or the dashboard");
    std::process::exit(2);
}
