//! Case 5: open (attach to a ready file, create a new one) against the raw
//! floors, and the attach steps replicated one by one.

use crate::Cfg;
use crate::contenders::{self, NamedSem, now_ns};
use crate::report::{Report, fmt_ns, met, pct};
use robust_mutex::{OpenOptions, SharedMutex};
use std::path::Path;

pub(crate) fn open_costs(cfg: &Cfg, dir: &Path, rep: &mut Report) {
    eprintln!("case 5: open, {} iterations (interleaved)", cfg.open_iters);
    let ready = dir.join("attach-ready");
    drop(SharedMutex::<u64>::open(&ready).expect("create"));
    let ready_c = contenders::c_path(&ready);
    let sem_path = dir.join("attach-sem");
    let sem = NamedSem::create(&sem_path);
    let sem_name = contenders::sem_name(&sem_path);
    let fresh = dir.join("fresh");
    std::fs::create_dir(&fresh).expect("mkdir");

    let names = [
        "ours attach",
        "raw attach",
        "flock open",
        "sem attach",
        "L0",
        "L1",
        "L2",
        "L3",
        "L4",
        "ns stat",
        "ours create",
        "raw create",
        "sem create",
        "ours drop",
        "raw drop",
    ];
    let mut s: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    let time = |f: &mut dyn FnMut()| {
        let t = now_ns();
        f();
        now_ns() - t
    };
    for i in 0..cfg.open_iters {
        let mut keep_ours = None;
        s[0].push(time(&mut || {
            keep_ours = Some(OpenOptions::new().open::<u64>(&ready).expect("attach"))
        }));
        s[13].push(time(&mut || drop(keep_ours.take())));
        let mut keep = None;
        s[1].push(time(&mut || keep = Some(contenders::raw_attach(&ready_c))));
        s[14].push(time(&mut || {
            if let Some(m) = keep.take() {
                m.touch();
            }
        }));
        let mut keep_f = None;
        s[2].push(time(&mut || {
            keep_f = Some(std::fs::File::open(&ready).expect("open"))
        }));
        drop(keep_f);
        s[3].push(time(&mut || {
            // SAFETY: a valid name of an existing semaphore; closed at once.
            let p = unsafe { libc::sem_open(sem_name.as_ptr(), 0) };
            assert_ne!(p, libc::SEM_FAILED);
            // SAFETY: `p` came from sem_open.
            unsafe { libc::sem_close(p) };
        }));
        for level in 0..5 {
            let mut keep = None;
            s[4 + level].push(time(&mut || {
                keep = contenders::replica_attach(&ready_c, level)
            }));
            drop(keep);
        }
        s[9].push(time(&mut contenders::proc_ns_stat));
        let p = fresh.join(format!("ours-{i}"));
        let mut keep_ours = None;
        s[10].push(time(&mut || {
            keep_ours = Some(SharedMutex::<u64>::open(&p).expect("create"))
        }));
        drop(keep_ours);
        let p = fresh.join(format!("raw-{i}"));
        let mut keep = None;
        s[11].push(time(&mut || keep = Some(contenders::raw_create(&p))));
        drop(keep);
        let name = std::ffi::CString::new(format!("/rmbench-create-{}-{i}", std::process::id()))
            .expect("no NUL");
        s[12].push(time(&mut || {
            // SAFETY: a valid name; the variadic mode and value are passed as
            // promoted unsigned ints; the semaphore is closed at once.
            let p = unsafe {
                libc::sem_open(
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL,
                    0o600 as libc::c_uint,
                    1 as libc::c_uint,
                )
            };
            assert_ne!(p, libc::SEM_FAILED);
            // SAFETY: `p` came from sem_open.
            unsafe { libc::sem_close(p) };
        }));
        // SAFETY: a valid name.
        unsafe { libc::sem_unlink(name.as_ptr()) };
    }
    drop(sem);
    let _ = std::fs::remove_dir_all(&fresh);
    for v in &mut s {
        v.sort_unstable();
    }
    let med = |i: usize| pct(&s[i], 0.5) as f64;
    let show = |i: usize| {
        format!(
            "median {}, p99 {}",
            fmt_ns(med(i)),
            fmt_ns(pct(&s[i], 0.99) as f64)
        )
    };
    let case = "5 open: attach to an existing ready file";
    rep.row(
        case,
        "**SharedMutex<u64>::open**",
        show(0),
        format!("{:.2}× raw floor", med(0) / med(1)),
        format!("≤ 1.1× raw floor: {}", met(med(0) <= 1.1 * med(1))),
    );
    for (i, name) in [
        (1, "raw floor: open + fstat + mmap + close"),
        (2, "flock user: open()"),
        (3, "sem_open existing + sem_close"),
    ] {
        rep.row(
            case,
            name,
            show(i),
            format!("{:.2}× raw floor", med(i) / med(1)),
            String::new(),
        );
    }
    rep.row(
        case,
        "drop of the last handle (held check faults the page in; munmap)",
        show(13),
        format!(
            "{:.2}× raw read-word + munmap ({})",
            med(13) / med(14),
            fmt_ns(med(14))
        ),
        String::new(),
    );
    let case = "5b attach steps (replica, cumulative)";
    for level in 0..5 {
        let step = if level == 0 {
            String::new()
        } else {
            format!("step {}; ", fmt_ns(med(4 + level) - med(3 + level)))
        };
        rep.row(
            case,
            contenders::ATTACH_LEVELS[level],
            show(4 + level),
            format!("{step}{:.0}% of ours", 100.0 * med(4 + level) / med(0)),
            String::new(),
        );
    }
    rep.row(
        case,
        "(removed by 42e4aee) stat /proc/self/ns/pid, once per attach, twice per create",
        show(9),
        format!("{:.0}% of today's attach", 100.0 * med(9) / med(0)),
        String::new(),
    );
    let case = "5 open: create + initialise a new file";
    rep.row(
        case,
        "**SharedMutex<u64>::open**",
        show(10),
        format!("{:.2}× raw floor", med(10) / med(11)),
        String::new(),
    );
    rep.row(
        case,
        "raw floor: open(O_CREAT|O_EXCL) + ftruncate + mmap + mutex_init",
        show(11),
        "1.00× raw floor".to_owned(),
        String::new(),
    );
    rep.row(
        case,
        "sem_open(O_CREAT|O_EXCL) + sem_close",
        show(12),
        format!("{:.2}× raw floor", med(12) / med(11)),
        String::new(),
    );
}
