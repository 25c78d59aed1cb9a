//! Library events go through the `log` facade at the documented levels.

use crate::common::{Kid, temp_path};
use log::{Level, LevelFilter, Log, Metadata, Record};
use robust_mutex::{Acquired, SharedMutex};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

/// The library's records logged on one thread (the logger is global to the
/// test binary, and other tests run beside this one).
struct Capture {
    thread: OnceLock<ThreadId>,
    records: Mutex<Vec<(Level, String)>>,
}

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &Record<'_>) {
        if r.target().starts_with("robust_mutex")
            && self.thread.get() == Some(&std::thread::current().id())
        {
            self.records
                .lock()
                .unwrap()
                .push((r.level(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture {
    thread: OnceLock::new(),
    records: Mutex::new(Vec::new()),
};

fn take() -> Vec<(Level, String)> {
    std::mem::take(&mut *LOGGER.records.lock().unwrap())
}

fn has(logs: &[(Level, String)], level: Level, text: &str) -> bool {
    logs.iter().any(|(l, m)| *l == level && m.contains(text))
}

/// One test, because the logger is global to the test binary; it records
/// only this test's thread.
#[test]
fn events_are_logged_at_their_levels() {
    LOGGER.thread.set(std::thread::current().id()).unwrap();
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(LevelFilter::Trace);
    let (_dir, path) = temp_path("m");
    let m = SharedMutex::<u64>::open(&path).unwrap();
    drop(m.lock().unwrap());
    let quiet = take();
    assert!(
        !quiet.iter().any(|(l, _)| *l <= Level::Info),
        "an uncontended lock logs nothing above debug: {quiet:?}"
    );
    // A clean acquisition and release are not logged at all: a level check
    // on every fast path costs more than the line is worth (issue 12).
    assert!(
        !has(&quiet, Level::Debug, "acquired") && !has(&quiet, Level::Trace, "acquired"),
        "a clean lock is not logged: {quiet:?}"
    );
    assert!(
        !quiet.iter().any(|(_, m)| m.contains("released")),
        "a clean release is not logged: {quiet:?}"
    );

    let mut kid = Kid::spawn("hold", &path);
    kid.expect("locked");
    assert!(m.lock_timeout(Duration::from_millis(1)).is_err());
    assert!(has(&take(), Level::Debug, "timed out"));

    kid.kill();
    match m.lock().unwrap() {
        Acquired::OwnerDied(r) => {
            assert!(has(&take(), Level::Warn, "died holding the lock"));
            drop(r);
        }
        Acquired::Clean(_) => panic!("expected OwnerDied"),
    }
    assert!(has(&take(), Level::Error, "not recoverable"));
    assert!(m.lock().is_err());
    assert!(has(&take(), Level::Error, "not recoverable"));

    robust_mutex::reset(&path, false).unwrap();
    assert!(has(&take(), Level::Warn, "reset"));
}
