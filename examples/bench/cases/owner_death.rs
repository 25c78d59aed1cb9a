//! Case 4: owner death (SIGKILL of the holder → the blocked waiter returns,
//! told `OwnerDied`).

use crate::Cfg;
use crate::contenders::{self, Lock, now_ns, wait_until_blocked};
use crate::procs::{BLOCK_TIMEOUT, Keeper, Kid, with_lock};
use crate::report::{Report, label, met, pct, spread};
use std::path::{Path, PathBuf};

/// `kills` times: a child takes the lock and says so over its stdout pipe;
/// a waiter thread here blocks in lock(); once the kernel shows it asleep,
/// t0 is read just before kill(SIGKILL); t1 is the waiter's first clock read
/// after its lock call returns. Returns (sorted t1 − t0, deaths reported).
fn death<L: Lock + Sync>(l: &L, kind: &str, path: &Path, kills: usize) -> (Vec<u64>, usize) {
    use std::sync::mpsc;
    let me = std::process::id();
    let mut lat = Vec::with_capacity(kills);
    let mut reported = 0;
    std::thread::scope(|s| {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (res_tx, res_rx) = mpsc::channel::<(u64, bool)>();
        let (tid_tx, tid_rx) = mpsc::channel::<u32>();
        s.spawn(move || {
            tid_tx.send(contenders::gettid() as u32).expect("send");
            for () in go_rx {
                let r = l.with(|_, died| (now_ns(), died));
                res_tx.send(r).expect("send");
            }
        });
        let tid = tid_rx.recv().expect("waiter tid");
        let ps = path.to_str().expect("UTF-8");
        for _ in 0..kills {
            let mut kid = Kid::spawn(&["__hold", kind, ps]);
            kid.expect("ready");
            go_tx.send(()).expect("go");
            assert!(
                wait_until_blocked(me, tid, L::WAIT_SYSCALL, BLOCK_TIMEOUT),
                "the waiter never blocked"
            );
            let t0 = now_ns();
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // unreaped child, so it cannot have been reused.
            unsafe { libc::kill(kid.pid() as libc::pid_t, libc::SIGKILL) };
            let (t1, died) = res_rx.recv().expect("waiter result");
            let _ = kid.child.wait();
            lat.push(t1 - t0);
            reported += usize::from(died);
        }
        drop(go_tx);
    });
    lat.sort_unstable();
    (lat, reported)
}

pub(crate) fn owner_death(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    let blocks = if cfg.quick { 2 } else { 4 };
    let per = cfg.kills.div_ceil(blocks);
    let flock_per = (per / 4).max(10);
    eprintln!(
        "case 4: owner death, {} kills per robust lock in {blocks} interleaved blocks",
        per * blocks
    );
    let case = "4 owner death: SIGKILL of holder → waiter returns";
    let kinds = ["raw", "ours", "flock"];
    let paths: Vec<PathBuf> = kinds
        .iter()
        .map(|k| dir.join(format!("death-{k}")))
        .collect();
    let keepers: Vec<Keeper> = kinds
        .iter()
        .zip(&paths)
        .map(|(k, p)| Keeper::create(k, p))
        .collect();
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); kinds.len()];
    let mut reported = vec![0usize; kinds.len()];
    for b in 0..blocks {
        for j in 0..kinds.len() {
            let i = (b + j) % kinds.len();
            let (kind, path) = (kinds[i], &paths[i]);
            let kills = if kind == "flock" { flock_per } else { per };
            let (v, r) = with_lock!(kind, path, |l| death(&l, kind, path, kills));
            lat[i].extend(v);
            reported[i] += r;
        }
    }
    drop(keepers);
    for v in &mut lat {
        v.sort_unstable();
    }
    let raw_p50 = pct(&lat[0], 0.5) as f64;
    for (i, kind) in kinds.iter().enumerate() {
        let v = &lat[i];
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        let told = if *kind == "flock" {
            "released, death NOT reported".to_owned()
        } else {
            format!("EOWNERDEAD reported {}/{}", reported[i], v.len())
        };
        rep.row(
            case,
            label(kind),
            format!("{} ({} kills; {told})", spread(v), v.len()),
            format!("{:.2}× raw (median)", p50 as f64 / raw_p50),
            if *kind == "ours" {
                format!("p99 < 1 ms: {}", met(p99 < 1_000_000))
            } else {
                String::new()
            },
        );
        if *kind == "ours" {
            assert_eq!(reported[i], v.len(), "an owner death went unreported");
        }
    }
}
