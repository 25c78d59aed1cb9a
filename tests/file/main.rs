//! The mutex file: how it is created, opened, refused, shared between users
//! and with pymutex, reported on and replaced. One test binary, one module
//! per concern.
//!
//! * `attach`: what attaching to a ready file touches (its pages: none);
//! * `handshake`: racing creators, creators killed at each step, takeovers;
//! * `bad_files`: every broken or hostile file gets a typed error and is left
//!   untouched;
//! * `full_disk`: full and read-only filesystems (a real small tmpfs);
//! * `fuzz_corpus`: the saved fuzz inputs replayed (`fuzz/check.rs`);
//! * `permissions`: other users (uid 65534), modes, owners;
//! * `status`: `status()` in every state, and read-only `inspect()`;
//! * `remove`: what `remove` refuses (held, broken, another user's) and takes;
//! * `reset`: the way back from broken mutexes, earlier boots, PID
//!   namespaces;
//! * `migrate`: version-1 files refused with a hint, converted by `reset`;
//! * `bare`: the bare (pymutex-format) file, on our side only;
//! * `pymutex`: the bare file shared with a Python peer making pymutex's
//!   calls (`pymutex_peer.py`), and with the real pymutex;
//! * `test_hooks`: a user's build ignores the test-only fault-injection
//!   variables.

#[path = "../common/mod.rs"]
mod common;

mod attach;
mod bad_files;
mod bare;
mod changed_underneath;
mod full_disk;
mod fuzz_corpus;
mod handshake;
mod migrate;
mod permissions;
mod pymutex;
mod remove;
mod reset;
mod status;
mod test_hooks;

/// Not a test: the entry point of child processes (see `common::roles`).
#[test]
fn child_main() {
    common::roles::run_if_child();
}
