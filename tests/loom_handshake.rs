//! loom model of the initialisation handshake: racing creators and openers,
//! and a creator that dies at each step, over a mocked filesystem. The
//! openers decide with the crate's own `decide_marked`; the file system
//! calls (O_EXCL create, flock, ftruncate, header writes, fchmod) are mocked
//! by a mutex-protected fake, and a process death releases its flock as the
//! kernel does. loom explores every interleaving of these steps.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_handshake`.
#![cfg(loom)]

use loom::sync::Mutex;
use loom::thread;
use robust_mutex::loom_api::{Marked, decide_marked};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    Empty,
    Sized,
    Init,
    Ready,
}

#[derive(Debug)]
struct Fs {
    exists: bool,
    /// true = mode 0400 (the creator's mark), false = final mode.
    marked: bool,
    content: Content,
    flock: Option<usize>,
    /// Processes attached to a ready mutex.
    attached: usize,
    /// Initialisations completed (creator or takeover).
    inits: usize,
}

/// The creator's steps after O_EXCL, in order; `die_after` stops there
/// (the process is SIGKILLed: its flock goes away, nothing else changes).
fn initialise(fs: &Mutex<Fs>, me: usize, die_after: Option<usize>) -> bool {
    let steps: [fn(&mut Fs); 4] = [
        |f| f.content = Content::Sized,
        |f| f.content = Content::Init,
        |f| f.content = Content::Ready,
        |f| f.marked = false,
    ];
    for (i, step) in steps.iter().enumerate() {
        let mut f = fs.lock().unwrap();
        assert_eq!(f.flock, Some(me), "initialising without the flock");
        assert_eq!(f.attached, 0, "initialising a file someone attached to");
        step(&mut f);
        if i == 3 {
            f.inits += 1; // READY and chmodded: complete, flock or not
        }
        if die_after == Some(i) {
            f.flock = None; // death releases the flock
            return false;
        }
    }
    fs.lock().unwrap().flock = None;
    true
}

/// One process opening (or creating) the path: true once attached to the
/// ready mutex, false if it died during its own initialisation.
fn open(fs: &Mutex<Fs>, me: usize, die_after: Option<usize>) -> bool {
    loop {
        // open(O_CREAT|O_EXCL) + flock, or observe.
        let created = {
            let mut f = fs.lock().unwrap();
            if !f.exists {
                f.exists = true;
                f.marked = true;
                f.content = Content::Empty;
                true
            } else {
                false
            }
        };
        if created {
            // flock, then re-check as create_step does: an opener may have
            // taken the initialisation over between our O_EXCL and our flock.
            let fresh = {
                let mut f = fs.lock().unwrap();
                if f.flock.is_none() {
                    f.flock = Some(me);
                    if f.marked && f.content == Content::Empty {
                        true
                    } else {
                        f.flock = None;
                        false
                    }
                } else {
                    false
                }
            };
            if fresh && !initialise(fs, me, die_after) {
                return false; // died mid-init
            }
            continue; // somebody took it over first: become an opener
        }
        let (marked, content) = {
            let f = fs.lock().unwrap();
            (f.marked, f.content)
        };
        if !marked {
            let mut f = fs.lock().unwrap();
            assert_eq!(f.content, Content::Ready, "writable but not ready");
            f.attached += 1;
            return true;
        }
        let _ = content;
        // Creator-marked: try the flock, then decide with the crate's function.
        let got = {
            let mut f = fs.lock().unwrap();
            if f.flock.is_none() {
                f.flock = Some(me);
                true
            } else {
                false
            }
        };
        let (still_marked, leftover) = if got {
            let f = fs.lock().unwrap();
            (f.marked, true) // every state our creator leaves is a leftover
        } else {
            (true, false)
        };
        match decide_marked(got, still_marked, leftover) {
            Marked::Wait => thread::yield_now(),
            Marked::Retry => {
                fs.lock().unwrap().flock = None;
            }
            Marked::TakeOver => {
                assert!(initialise(fs, me, None));
            }
            Marked::Refuse => panic!("refused a crashed creator's leftover"),
        }
    }
}

fn run(creator_dies_after: Option<usize>, openers: usize) {
    // A preemption bound of 3 keeps each model to seconds while still
    // covering every ordering of the protocol's steps between processes.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(move || {
        let fs = Arc::new(Mutex::new(Fs {
            exists: false,
            marked: false,
            content: Content::Empty,
            flock: None,
            attached: 0,
            inits: 0,
        }));
        let creator = {
            let fs = fs.clone();
            thread::spawn(move || open(&fs, 0, creator_dies_after))
        };
        let others: Vec<_> = (1..=openers)
            .map(|i| {
                let fs = fs.clone();
                thread::spawn(move || open(&fs, i, None))
            })
            .collect();
        let creator_alive = creator.join().unwrap();
        for o in others {
            assert!(o.join().unwrap(), "an opener failed");
        }
        let f = fs.lock().unwrap();
        assert!(!f.marked && f.content == Content::Ready, "{f:?}");
        assert_eq!(f.flock, None);
        assert_eq!(f.inits, 1, "exactly one complete initialisation: {f:?}");
        // Every process that did not die attached to the ready mutex.
        assert_eq!(f.attached, openers + usize::from(creator_alive), "{f:?}");
    });
}

#[test]
fn racing_processes_end_with_one_initialised_mutex() {
    run(None, 1);
}

#[test]
fn a_creator_dying_at_any_step_is_taken_over() {
    for step in 0..4 {
        run(Some(step), 1);
    }
}
