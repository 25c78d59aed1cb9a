//! The crate's log records to Python's `logging` (logger `robust_mutex`
//! and its children, one per module: `robust_mutex.raw`, ...).
//!
//! A record is queued, never emitted where it is made: the thread that
//! makes it may not hold the GIL, and waiting for the GIL there (as a
//! direct bridge such as pyo3-log does) can deadlock against a thread that
//! holds the GIL and waits for a lock the logging thread holds. The queue
//! is emitted by the next call into this package (every call that may log
//! ends with [`flush`]) and at interpreter exit. The level is Python's
//! (`logging.getLogger("robust_mutex").getEffectiveLevel()`), read at
//! import, at every open and at most once a second before a wait.

use pyo3::prelude::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A record waiting for the GIL.
struct Record {
    level: log::Level,
    target: String,
    message: String,
}

static QUEUE: Mutex<Vec<Record>> = Mutex::new(Vec::new());
static PENDING: AtomicBool = AtomicBool::new(false);

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let r = Record {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
        };
        let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a process that never calls back into Python again (or
        // that logs in a loop with nobody reading) keeps the latest.
        if q.len() >= 10_000 {
            q.remove(0);
        }
        q.push(r);
        PENDING.store(true, Ordering::Release);
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// Installs the bridge (if no other `log` logger is installed in this
/// process) and reads Python's level.
pub(crate) fn install(py: Python<'_>) {
    if log::set_logger(&BRIDGE).is_ok() {
        refresh_level(py);
    }
}

/// Reads the effective level of Python's `robust_mutex` logger into `log`'s
/// filter, so that records Python would drop are never made.
pub(crate) fn refresh_level(py: Python<'_>) {
    let level = py
        .import("logging")
        .and_then(|l| l.call_method1("getLogger", ("robust_mutex",)))
        .and_then(|l| l.call_method0("getEffectiveLevel"))
        .and_then(|v| v.extract::<i32>())
        .unwrap_or(30);
    let filter = match level {
        i32::MIN..=5 => log::LevelFilter::Trace,
        6..=10 => log::LevelFilter::Debug,
        11..=20 => log::LevelFilter::Info,
        21..=30 => log::LevelFilter::Warn,
        31..=50 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    };
    log::set_max_level(filter);
}

/// When the level was last read (ms since the first read).
static LAST_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`refresh_level`], at most once a second (a contended lock calls it
/// before every wait; reading Python's level costs microseconds).
pub(crate) fn refresh_level_now_and_then(py: Python<'_>) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1;
    let last = LAST_READ.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 1000 || last == 0 {
        LAST_READ.store(now, Ordering::Relaxed);
        refresh_level(py);
    }
}

/// Emits the queued records to Python's `logging` (cheap when none).
pub(crate) fn flush(py: Python<'_>) {
    if !PENDING.load(Ordering::Acquire) {
        return;
    }
    let records = {
        let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        PENDING.store(false, Ordering::Release);
        std::mem::take(&mut *q)
    };
    let Ok(logging) = py.import("logging") else {
        return;
    };
    for r in records {
        let level = match r.level {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            log::Level::Debug => 10,
            log::Level::Trace => 5,
        };
        let name = r.target.replace("::", ".");
        let _ = logging
            .call_method1("getLogger", (name,))
            .and_then(|l| l.call_method1("log", (level, r.message)));
    }
}

/// Emits what is queued (for `atexit`, and for tests).
#[pyfunction]
pub(crate) fn _flush_log(py: Python<'_>) {
    flush(py);
}
