//! Case 4b: cancelling a blocked wait (`CancelToken::cancel` →
//! `LockError::Cancelled`).

use crate::Cfg;
use crate::contenders::{self, now_ns, wait_until_blocked};
use crate::procs::{BLOCK_TIMEOUT, Kid};
use crate::report::{Report, spread};
use robust_mutex::{CancelToken, LockError, SharedMutex};
use std::path::Path;

pub(crate) fn cancel(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    // Cancelling a blocked wait: CancelToken::cancel → LockError::Cancelled.
    let path = dir.join("cancel");
    let m = SharedMutex::<u64>::open(&path).expect("open");
    let mut kid = Kid::spawn(&["__hold", "ours", path.to_str().expect("UTF-8")]);
    kid.expect("ready");
    let me = std::process::id();
    let mut lat = Vec::with_capacity(cfg.cancels);
    for _ in 0..cfg.cancels {
        let token = CancelToken::new();
        std::thread::scope(|s| {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel::<u32>();
            let (m, token) = (&m, &token);
            let waiter = s.spawn(move || {
                tid_tx.send(contenders::gettid() as u32).expect("send");
                let r = m.lock_cancellable(token, None).map(drop);
                let t1 = now_ns();
                assert!(matches!(r, Err(LockError::Cancelled)), "{r:?}");
                t1
            });
            let tid = tid_rx.recv().expect("tid");
            assert!(wait_until_blocked(
                me,
                tid,
                libc::SYS_futex_waitv,
                BLOCK_TIMEOUT
            ));
            let t0 = now_ns();
            token.cancel();
            lat.push(waiter.join().expect("waiter") - t0);
        });
    }
    // SAFETY: our unreaped child.
    unsafe { libc::kill(kid.pid() as libc::pid_t, libc::SIGKILL) };
    let _ = kid.child.wait();
    lat.sort_unstable();
    rep.row(
        "4b cancel a blocked wait (CancelToken::cancel → Cancelled)",
        "**SharedMutex<u64>**",
        format!("{} ({} cancels)", spread(&lat), cfg.cancels),
        String::new(),
        String::new(),
    );
}
