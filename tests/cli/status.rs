//! `robust-mutex status`: each state, with its exit code, as text and JSON.

use crate::*;

#[test]
fn status_shows_each_state_with_its_exit_code() {
    let (_dir, path) = temp_path("l");
    assert_eq!(cli(&["create", p(&path)]).status.code(), Some(0));
    let (v, c) = json_status(&path);
    assert_eq!(
        (v["state"].as_str(), c, &v["owner"]),
        (Some("unlocked"), 0, &serde_json::Value::Null)
    );
    for key in [
        "acquisitions",
        "contended",
        "owner_deaths",
        "recoveries",
        "resets",
    ] {
        assert_eq!(v["counters"][key], 0, "{key}");
    }
    assert_eq!(v["file"]["version"], 1);
    assert_eq!(v["file"]["boot_id_matches"], true);

    let mut h = Holder::start(&path, &["--label", "L"]);
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("locked"), 1));
    assert_eq!(v["owner"]["pid"], h.pid());
    assert_eq!(v["owner"]["label"], "L");
    assert!(v["owner"]["tid"].as_u64().unwrap() > 0);
    assert_eq!(v["owner"]["alive"], true);
    assert!(
        v["owner"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("run --label L"),
        "{v}"
    );
    assert_eq!(v["counters"]["acquisitions"], 1);
    let o = cli(&["status", p(&path)]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.starts_with(&format!("{}: locked\n", p(&path))),
        "{text}"
    );
    assert!(text.contains(&format!("pid {}", h.pid())), "{text}");
    assert!(
        text.contains("run --label L"),
        "the holder's command line: {text}"
    );
    assert!(text.contains("mode 0600"), "{text}");

    h.kill_run();
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("owner-dead"), 2));
    assert_eq!(v["owner"]["pid"], h.pid(), "the dead holder");

    assert_eq!(
        cli(&["run", p(&path), "--", "false"]).status.code(),
        Some(1)
    );
    let (v, c) = json_status(&path);
    assert_eq!((v["state"].as_str(), c), (Some("not-recoverable"), 2));
    assert_eq!(v["counters"]["owner_deaths"], 1);
    let o = cli(&["status", p(&path)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains(&format!("robust-mutex reset {}", p(&path))));
}
