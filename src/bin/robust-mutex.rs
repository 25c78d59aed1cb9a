//! The `robust-mutex` command (placeholder until the CLI issue lands).
fn main() {}
