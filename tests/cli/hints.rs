//! The hints `remove` gives for files it cannot judge.

use crate::*;

#[test]
fn remove_of_a_file_cut_short_points_to_remove_force() {
    let (_dir, path) = temp_path("l");
    robust_mutex::SharedMutex::<u64>::open(&path).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(300).unwrap();
    let before = snapshot(&path);
    let o = cli(&["remove", p(&path)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(65), "{err}");
    assert!(
        err.contains(&format!("robust-mutex remove --force {}", p(&path)))
            && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(snapshot(&path), before);
}

#[test]
fn status_of_a_creation_names_status_and_prints_json() {
    let (_dir, path) = temp_path("l");
    abandoned_creation(&path);
    let o = cli(&["status", "--json", p(&path)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!("status {}: being created", p(&path))),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "being-created");
    assert_eq!(v["path"], p(&path));
}
