//! The crate's errors as Python exceptions: the package's own classes
//! (`robust_mutex._errors`) where Python has none, the OS classes where it
//! has one. Every message is the crate's, with the path and the cause.

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use robust_mutex::{Error, LockError};

/// `robust_mutex._errors`, imported on first use.
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception class `name` of `robust_mutex._errors`.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = match ERRORS.get(py) {
        Some(m) => m,
        None => {
            let m = py.import("robust_mutex._errors")?.unbind();
            ERRORS.get_or_init(py, || m)
        }
    };
    Ok(module.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// Our class `name`, made with `args` (or whatever went wrong finding it).
pub(crate) fn ours<A>(py: Python<'_>, name: &str, args: A) -> PyErr
where
    A: pyo3::PyErrArguments + Send + Sync + 'static,
{
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, args),
        Err(e) => e,
    }
}

/// An OS error class for `errno` (Python picks FileNotFoundError,
/// PermissionError, ... from it), with the message and the path.
fn os_error(errno: i32, msg: String, path: Option<String>) -> PyErr {
    match path {
        Some(p) => PyOSError::new_err((errno, msg, p)),
        None => PyOSError::new_err((errno, msg)),
    }
}

/// A lock call's error.
pub(crate) fn lock_error(py: Python<'_>, e: LockError) -> PyErr {
    let msg = e.to_string();
    match e {
        LockError::WouldBlock => ours(py, "WouldBlock", (libc::EAGAIN, msg)),
        LockError::TimedOut => ours(py, "TimedOut", (libc::ETIMEDOUT, msg)),
        LockError::Deadlock => ours(py, "Deadlock", (libc::EDEADLK, msg)),
        LockError::NotOwner { .. } => ours(py, "NotOwner", (libc::EPERM, msg)),
        LockError::NotRecoverable => ours(py, "NotRecoverable", (msg,)),
        LockError::Stuck { .. } => ours(py, "Stuck", (msg,)),
        LockError::TooManyHeld { .. } => ours(py, "TooManyHeld", (msg,)),
        LockError::FileChanged { .. } => ours(py, "FileChanged", (msg,)),
        LockError::Io(io) => os_error(io.raw_os_error().unwrap_or(libc::EIO), msg, None),
        _ => ours(py, "Error", (msg,)),
    }
}

/// An open, reset, remove or inspect error.
pub(crate) fn file_error(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let os = |errno: i32, path: &std::path::Path| {
        os_error(errno, msg.clone(), Some(path.display().to_string()))
    };
    match &e {
        Error::NotFound { path } => os(libc::ENOENT, path),
        Error::AlreadyExists { path } => os(libc::EEXIST, path),
        Error::PermissionDenied { path, .. }
        | Error::DirectoryNotWritable { path, .. }
        | Error::ForeignOwner { path, .. }
        | Error::ResetChangesOwner { path, .. } => os(libc::EACCES, path),
        Error::NoSpace { path, .. } => os(libc::ENOSPC, path),
        Error::ReadOnlyFilesystem { path, .. } => os(libc::EROFS, path),
        Error::Io { path, source, .. } => os(source.raw_os_error().unwrap_or(libc::EIO), path),
        Error::InitTimeout { .. } | Error::FlockHeld { .. } => {
            ours(py, "TimedOut", (libc::ETIMEDOUT, msg))
        }
        Error::ChangedUnderneath { .. } => ours(py, "FileChanged", (msg,)),
        Error::ResetRefused { .. }
        | Error::ResetNeedsForce { .. }
        | Error::RemoveRefused { .. }
        | Error::ConversionRefused { .. } => ours(py, "Refused", (msg,)),
        Error::InvalidOptions { .. } | Error::InvalidMode { .. } => PyValueError::new_err(msg),
        Error::TypeMismatch {
            path,
            file_size,
            size,
            ..
        } => ours(
            py,
            "InvalidFile",
            (format!(
                "open {}: the file holds a value of {file_size} bytes, not size={size} (left untouched)",
                path.display()
            ),),
        ),
        _ => ours(py, "InvalidFile", (msg,)),
    }
}

/// A guard used after it let go of its lock.
pub(crate) fn released() -> PyErr {
    PyRuntimeError::new_err("the lock was already released through this guard")
}

/// A guard used by a thread that is not its holder.
pub(crate) fn other_thread(py: Python<'_>) -> PyErr {
    not_owner(
        py,
        "the lock is held by another thread: only the thread that took it can use or release it",
    )
}

/// NotOwner (a PermissionError, errno EPERM) with `msg`.
pub(crate) fn not_owner(py: Python<'_>, msg: &'static str) -> PyErr {
    ours(py, "NotOwner", (libc::EPERM, msg))
}
