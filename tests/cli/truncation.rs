//! A lock file truncated while in use (issue 11, item 2, the command's
//! half): the command never dies silently of SIGBUS; it prints one line
//! naming the path and exits 74.

use crate::*;
use std::io::Write;

#[test]
fn truncation_under_use_ends_holder_and_waiter_with_one_line_and_74() {
    let (_dir, path) = temp_path("t.lock");
    let mut holder = bin()
        .args(["run", p(&path), "--", "sh", "-c", "echo ready; read x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut input = holder.stdin.take().unwrap();
    let mut holder = Proc(holder);
    assert_eq!(line(&mut out), "ready");
    let waiter = bin()
        .args(["run", p(&path), "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiter = Proc(waiter);
    wait_for_waiter(&path);

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let want = format!("robust-mutex: {} was truncated while in use\n", p(&path));
    let read_err = |p: &mut Proc| {
        let mut s = String::new();
        std::io::Read::read_to_string(p.0.stderr.as_mut().unwrap(), &mut s).unwrap();
        s
    };
    // The waiter looks at the lock again within its stuck check's period.
    let st = waiter.wait_exit();
    assert_eq!((st.code(), read_err(&mut waiter)), (Some(74), want.clone()));
    // The holder finds out when COMMAND ends and it releases the lock.
    writeln!(input, "go").unwrap();
    let st = holder.wait_exit();
    assert_eq!((st.code(), read_err(&mut holder)), (Some(74), want));
}
