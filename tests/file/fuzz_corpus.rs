//! Replays every saved fuzz input (`fuzz/corpus/open_file/*`) through the
//! same property as the fuzz target (`fuzz/check.rs`), so a plain
//! `cargo test` exercises the whole corpus. Fails if the corpus is missing
//! or empty, names the input that broke the property, and (through the
//! check's watchdog) aborts with the input's name instead of hanging.
//!
//! The hand-made seeds (`seed-*`) are written by the ignored test below:
//! `cargo test --test file -- --ignored write_seed_inputs`.

#[path = "../../fuzz/check.rs"]
mod check;

use std::path::{Path, PathBuf};
use std::time::Instant;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open_file")
}

/// Inputs of bugs that are diagnosed but not fixed yet, each with the
/// regression test that fails until the fix lands. They would hang this
/// replay (the watchdog would abort it), so they are skipped here, loudly.
/// Remove an entry together with the fix.
/// (`regression-retired-state-spins-open` was one until commit bc105dd,
/// `regression-semaphore-permit-kind-word-aborts` until 39bb771.)
const KNOWN_OPEN_BUGS: &[(&str, &str)] = &[];

#[test]
fn every_saved_fuzz_input_still_holds_the_property() {
    let dir = corpus_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the fuzz corpus {} is missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "the fuzz corpus {} is empty",
        dir.display()
    );
    for (name, _) in KNOWN_OPEN_BUGS {
        assert!(
            dir.join(name).is_file(),
            "known-bug input {name} is not in the corpus"
        );
    }
    let start = Instant::now();
    let (mut replayed, mut skipped) = (0, 0);
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy();
        if let Some((_, test)) = KNOWN_OPEN_BUGS.iter().find(|(n, _)| *n == name) {
            eprintln!("SKIPPED {name}: known open bug, see the failing {test}");
            skipped += 1;
            continue;
        }
        let data = std::fs::read(path).unwrap();
        check::set_label(&path.display().to_string());
        match std::panic::catch_unwind(|| check::check(&data)) {
            Ok(outcome) => *outcomes.entry(outcome.unwrap_or("too short")).or_default() += 1,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("fuzz input {} broke the property: {why}", path.display());
            }
        }
        replayed += 1;
    }
    assert!(replayed > 0, "no fuzz input was replayed");
    eprintln!(
        "replayed {replayed} fuzz inputs in {:?} ({skipped} known-bug inputs skipped): {outcomes:?}",
        start.elapsed()
    );
    assert!(
        outcomes.get("accepted").is_some_and(|&n| n > 0),
        "no input opened successfully: the corpus no longer reaches the success path"
    );
}

/// Writes the hand-made seed inputs (input layout: see `fuzz/check.rs`):
/// valid files of each kind and value type in the interesting modes, each
/// header field (and the mutex's and owner record's words) corrupted, files
/// cut at field boundaries or longer than they say, a stale boot id with a
/// held lock word, a crashed creator's leftovers, someone's data.
/// Most are bit-flip inputs (edits to a file the library makes at replay
/// time); the raw ones hold no boot id, so none depends on this machine.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_inputs() {
    const MUTEX: u8 = 0;
    const BARE: u8 = 4;
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    let mut put = |name: String, bytes: Vec<u8>| {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        n += 1;
    };
    // byte 0 = bit-flip << 7 | opener << 2 | type; bytes 1-2 = mode selector.
    let openers: &[(&str, u8)] = &[
        ("mutex", MUTEX),
        ("reentrant", 1),
        ("sem", 2),
        ("lockonly", 3),
        ("bare", BARE),
    ];
    let modes: &[(&str, u16)] = &[
        ("0600", 0),
        ("0400", 1),
        ("0644", 2),
        ("0444", 3),
        ("0660", 4),
        ("0000", 5),
        // Selector 6 with explicit bits: setuid + 0600, sticky + the mark.
        ("4600", 6 | (0o4600 << 3)),
        ("1400", 6 | (0o1400 << 3)),
    ];
    // Header fields (docs/design.md), the mutex's words (glibc x86_64:
    // __lock, __count, __owner, __nusers, __kind) and the owner record.
    let fields: &[(&str, u16)] = &[
        ("magic", 0),
        ("magic7", 7),
        ("version", 8),
        ("state", 12),
        ("flags", 16),
        ("kind", 20),
        ("arch", 24),
        ("libc", 40),
        ("mutexsize", 48),
        ("ptrwidth", 52),
        ("datasize", 56),
        ("dataalign", 64),
        ("dataoffset", 72),
        ("filelen", 80),
        ("generation", 88),
        ("bootid", 96),
        ("pidns", 112),
        ("created", 120),
        ("reserved", 128),
        ("lockword", 256),
        ("lockword-top", 259),
        ("mutex-count", 260),
        ("mutex-owner", 264),
        ("mutex-nusers", 268),
        ("mutex-kind", 272),
        ("owner-pid", 320),
        ("owner-tid", 324),
        ("owner-labellen", 352),
        ("owner-depth", 356),
        ("counters", 448),
        ("value", 512),
    ];
    let key_fields = [
        "magic",
        "state",
        "kind",
        "datasize",
        "dataalign",
        "filelen",
        "bootid",
        "lockword",
        "lockword-top",
        "mutex-kind",
        "owner-labellen",
        "owner-depth",
    ];
    let layout_fields = ["datasize", "dataalign", "dataoffset", "filelen"];
    // A bare file is one pthread_mutex_t: its words, from offset 0.
    let bare_fields: &[(&str, u16)] = &[
        ("lockword", 0),
        ("lockword-top", 3),
        ("count", 4),
        ("owner", 8),
        ("nusers", 12),
        ("kind", 16),
        ("spins", 20),
        ("list", 24),
    ];
    let raw = |opener: u8, sel: u16, body: &[u8]| {
        let mut v = vec![opener << 2, sel as u8, (sel >> 8) as u8];
        v.extend_from_slice(body);
        v
    };
    let flip = |opener: u8, ty: u8, sel: u16, edits: &[(u16, u8)]| {
        let mut v = vec![0x80 | opener << 2 | ty, sel as u8, (sel >> 8) as u8];
        for &(off, x) in edits {
            v.extend_from_slice(&off.to_le_bytes());
            v.push(x);
        }
        v
    };
    // The length of the valid file each (opener, type) starts from.
    let len_of = |o: u8, ty: u8| -> u16 {
        match (o, ty) {
            (BARE, _) => 40,
            (2, t) => 512 + 192 * [1u16, 2, 4, 127][t as usize],
            (_, 0) => 520,
            (_, 1) => 512,
            (_, 2) => 512 + 4096,
            _ => 528,
        }
    };
    // A cut is an edit past the end with x = 0xff: the file is cut at
    // offset % (len + 1).
    let cut =
        |o: u8, ty: u8, sel: u16, at: u16| flip(o, ty, sel, &[(at + len_of(o, ty) + 1, 0xff)]);

    for &(oname, o) in openers {
        let types: &[u8] = if o == BARE { &[0] } else { &[0, 1, 2, 3] };
        for &ty in types {
            let full = o == MUTEX && ty == 0;
            let len = len_of(o, ty);
            // A valid file, unedited.
            for &(mname, sel) in modes {
                let wanted = full
                    || o == BARE
                    || (ty == 0 && ["0600", "0400", "0644", "0000"].contains(&mname))
                    || mname == "0600";
                if wanted {
                    put(
                        format!("{oname}-t{ty}-valid-{mname}"),
                        flip(o, ty, sel, &[]),
                    );
                }
            }
            // Corrupted fields.
            let fs: Vec<(&str, u16)> = if o == BARE {
                bare_fields.to_vec()
            } else {
                fields
                    .iter()
                    .copied()
                    .filter(|(f, _)| {
                        full || (ty == 0 && key_fields.contains(f))
                            || (o == MUTEX && layout_fields.contains(f))
                    })
                    .collect()
            };
            for &(fname, at) in &fs {
                put(
                    format!("{oname}-t{ty}-flip-{fname}"),
                    flip(o, ty, 0, &[(at, 0x5a)]),
                );
                if full && key_fields.contains(&fname) {
                    put(
                        format!("{oname}-t{ty}-flip-{fname}-x01"),
                        flip(o, ty, 0, &[(at, 0x01)]),
                    );
                    put(
                        format!("{oname}-t{ty}-flip-{fname}-xff"),
                        flip(o, ty, 0, &[(at, 0xff)]),
                    );
                }
            }
            if o == 2 && ty == 1 {
                // The second permit's lock word: garbage, and owner-died.
                put(
                    format!("{oname}-t1-flip-slot1-lockword"),
                    flip(o, 1, 0, &[(704, 0x5a)]),
                );
                put(
                    format!("{oname}-t1-slot1-ownerdied"),
                    flip(o, 1, 0, &[(707, 0x40)]),
                );
            }
            // Cut at field boundaries.
            let cuts: Vec<u16> = if full {
                fields
                    .iter()
                    .map(|&(_, at)| at)
                    .chain([1, 255, 511, 519])
                    .collect()
            } else if o == BARE {
                vec![1, 16, 39]
            } else if ty == 0 {
                vec![12, 256, 511, len - 1]
            } else if o == MUTEX {
                vec![511, len - 1]
            } else {
                vec![]
            };
            for at in cuts.into_iter().filter(|&c| c > 0 && c < len) {
                put(format!("{oname}-t{ty}-cut{at}-0600"), cut(o, ty, 0, at));
                if full && [1, 12, 256, 511].contains(&at) {
                    put(format!("{oname}-t{ty}-cut{at}-0400"), cut(o, ty, 1, at));
                }
            }
            if ty == 0 || o == MUTEX {
                // Longer than the header says.
                put(
                    format!("{oname}-t{ty}-extended"),
                    flip(o, ty, 0, &[(len + 100, 0x42)]),
                );
            }
            if ty == 0 && o != BARE {
                // From another boot, with a held lock word (a dead TID), and
                // the owner-died bit set.
                put(
                    format!("{oname}-t0-stale-boot-held"),
                    flip(o, 0, 0, &[(96, 1), (256, 0x10), (258, 0x3f)]),
                );
                put(
                    format!("{oname}-t0-owner-died"),
                    flip(o, 0, 0, &[(256, 0x10), (259, 0x40)]),
                );
                // A READY header in a 0400 file: the creator died before its chmod.
                put(format!("{oname}-t0-ready-marked"), flip(o, 0, 1, &[]));
            }
        }
    }
    // A crashed creator's leftovers, and someone's data.
    let mut init = vec![0u8; 520];
    init[..8].copy_from_slice(b"RBSTMTX\x01");
    init[8] = 1;
    for &(oname, o) in openers {
        let ms: &[(&str, u16)] = if o == MUTEX { &modes[..6] } else { &modes[..2] };
        for &(mname, sel) in ms {
            put(format!("{oname}-empty-{mname}"), raw(o, sel, &[]));
            put(format!("{oname}-zeros4k-{mname}"), raw(o, sel, &[0; 4096]));
            put(
                format!("{oname}-text-{mname}"),
                raw(o, sel, b"#!/bin/sh\necho precious data\n"),
            );
        }
        put(format!("{oname}-zeros40-0400"), raw(o, 1, &[0; 40]));
        put(format!("{oname}-magic-init-0400"), raw(o, 1, &init));
        put(format!("{oname}-magic-init-0600"), raw(o, 0, &init));
        put(format!("{oname}-magic-prefix"), raw(o, 0, b"RBSTM"));
    }
    // Bigger than the 64 KiB cap: only the first 64 KiB are used.
    put(
        "mutex-ff-65k-0600".into(),
        raw(MUTEX, 0, &vec![0xff; 65 * 1024]),
    );
    put(
        "mutex-zeros-65k-0400".into(),
        raw(MUTEX, 1, &vec![0; 65 * 1024]),
    );

    // Known bug: a RETIRED header at the path (READY ^ RETIRED = 0x1010).
    std::fs::write(
        dir.join("regression-retired-state-spins-open"),
        flip(MUTEX, 0, 0, &[(12, 0x10), (13, 0x10)]),
    )
    .unwrap();
    eprintln!("wrote {n} seed inputs to {}", dir.display());
}
