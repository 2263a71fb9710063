//! The harness's own promise, checked: a test that panics with a supervisor running leaves
//! no process behind, not even a zombie of ours.

use std::path::PathBuf;

use crate::harness::{pid, pids, TestHome};
use crate::procs::{self, ProcId, Stat};

#[test]
fn a_panicking_test_leaves_no_process_behind() {
    // What the doomed test saw: its home's marker, the daemon and the components.
    let seen = std::thread::spawn(|| -> (String, PathBuf, Vec<ProcId>) {
        let home = TestHome::stack();
        home.run(&["start"]).expect_code(0);
        let status = home.wait_running(&["is", "svg", "ps"]);
        let mut ids: Vec<ProcId> = pids(&status).into_values().filter_map(ProcId::of).collect();
        ids.extend(pid(&status["supervisor"]["pid"]).and_then(ProcId::of));
        let seen = (home.marker(), home.path().to_path_buf(), ids);
        // Unwinding drops `home`, which is what a failing assertion does.
        std::panic::panic_any(seen);
    })
    .join()
    .expect_err("the doomed test was meant to panic");
    let (marker, root, ids) = *seen
        .downcast::<(String, PathBuf, Vec<ProcId>)>()
        .expect("the doomed test's findings");

    assert_eq!(ids.len(), 4, "a daemon and three components");
    let left = procs::marked(&marker);
    assert!(
        left.is_empty(),
        "marked processes survived the guard: {left:?}"
    );
    let me = std::process::id();
    for id in &ids {
        assert!(!id.is_alive(), "pid {} survived the guard", id.pid);
        // Reaped too: the daemon was our child (we are a subreaper) and is no zombie of ours.
        let zombie_of_ours =
            ProcId::of(id.pid) == Some(*id) && Stat::read(id.pid).is_some_and(|s| s.ppid == me);
        assert!(!zombie_of_ours, "pid {} was left unreaped", id.pid);
    }
    assert!(!root.exists(), "the temporary home was not removed");
}
