//! A [`MemorySampler`] that reads only what changed gives the figures of a whole walk: while
//! processes are created below it (children, the escapee of a double fork, threads), and once
//! one of its processes goes.
//!
//! A test binary of its own, with one test: the sampler walks everything below this process, so
//! no other test may spawn processes here while it runs.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bounded, unique_tree_id, wait_for};
use imageserving_actors::process::{
    adopt_orphans, component_memory, find_marked, sweep_marked, MemorySampler, COMPONENT_ENV,
    TREE_ENV,
};

/// Each round adds a child and, through a subshell that exits at once, an escapee handed to us.
const FORKER: &str = "while read line; do sleep 600 & (setsid sleep 601 &); done";
/// Each line starts one more thread. It creates the file it is given once it reads its input.
const THREADER: &str = "import sys, threading, time
open(sys.argv[1], 'w').close()
for line in sys.stdin:
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()";

/// How many idle components stand beside the two that change.
const QUIET: usize = 40;

/// Kills every process of the test's tree when dropped, even when the test fails.
struct Reaper {
    tree: String,
    children: Vec<Child>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Killed while alive; reaped here or by the reaper of adopted orphans.
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (_, survived) = sweep_marked(&self.tree, None, Duration::from_secs(10));
        if !std::thread::panicking() {
            assert!(!survived, "processes of {} survived", self.tree);
        }
    }
}

fn spawn(reaper: &mut Reaper, name: &str, argv: &[&str]) -> u32 {
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .env(TREE_ENV, &reaper.tree)
        .env(COMPONENT_ENV, name)
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let pid = child.id();
    reaper.children.push(child);
    pid
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// Whether every figure of `sampled` is within 5 % of the whole walk's, and no component is
/// missing or extra.
fn close(sampled: &HashMap<String, u64>, walked: &HashMap<String, u64>) -> bool {
    sampled.len() == walked.len()
        && walked
            .iter()
            .all(|(name, &w)| sampled.get(name).is_some_and(|&s| s.abs_diff(w) <= w / 20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_only_what_changed_gives_the_figures_of_a_whole_walk() {
    bounded(async {
        adopt_orphans().expect("adopt orphans");
        let tree = unique_tree_id("sample");
        let mut reaper = Reaper {
            tree: tree.clone(),
            children: Vec::new(),
        };
        let mut roots = Vec::new();
        for i in 0..QUIET {
            let name = format!("quiet{i}");
            roots.push((name.clone(), spawn(&mut reaper, &name, &["sleep", "600"])));
        }
        let forker = spawn(&mut reaper, "forker", &["sh", "-c", FORKER]);
        let dir = tempfile::tempdir().expect("temporary directory");
        let ready = dir.path().join("ready");
        let ready_arg = ready.to_str().expect("a UTF-8 path");
        let threader = spawn(
            &mut reaper,
            "threader",
            &["python3", "-c", THREADER, ready_arg],
        );
        roots.push(("forker".to_owned(), forker));
        roots.push(("threader".to_owned(), threader));
        let quiet_pids: Vec<u32> = roots[..QUIET].iter().map(|(_, p)| *p).collect();
        let all_started = || quiet_pids.iter().all(|&p| comm(p) == "sleep") && ready.exists();
        assert!(wait_for(all_started, Duration::from_secs(20)).await);
        // Until a program has loaded, its memory grows: settled once two samples 20 ms apart
        // are the same.
        let mut last = HashMap::new();
        let mut settled = || {
            let now = component_memory(&tree, &roots);
            std::mem::replace(&mut last, now) == last
        };
        assert!(wait_for(&mut settled, Duration::from_secs(20)).await);

        let mut sampler = MemorySampler::new();
        let first = sampler.sample(&tree, &roots);
        assert_eq!(sampler.full_walks(), 1);
        assert!(close(&first, &component_memory(&tree, &roots)), "{first:?}");

        // Nothing changes: a sample re-reads what it knows. Other processes of the machine
        // may be created meanwhile (too many of them make it walk again): a few attempts.
        let mut reread = false;
        for _ in 0..20 {
            let walks = sampler.full_walks();
            let sampled = sampler.sample(&tree, &roots);
            let walked = component_memory(&tree, &roots);
            assert!(close(&sampled, &walked), "{sampled:?} vs {walked:?}");
            if sampler.full_walks() == walks {
                reread = true;
                break;
            }
        }
        assert!(reread, "every sample walked the whole tree");

        // Processes and threads appear between two samples: the next one, if it reads only what
        // changed, finds the new processes (the escapees too) and counts no thread twice.
        let mut found = false;
        let mut before = first;
        for rounds in 1..=10 {
            sampler.sample(&tree, &roots);
            let walks = sampler.full_walks();
            for child in &mut reaper.children[QUIET..] {
                let stdin = child.stdin.as_mut().expect("stdin");
                stdin.write_all(b"more\n").expect("write a line");
                stdin.flush().expect("flush");
            }
            let forked = || {
                let sleeps = find_marked(&tree, Some("forker"))
                    .into_iter()
                    .filter(|&p| comm(p) == "sleep")
                    .count();
                sleeps == 2 * rounds && threads(threader) == 1 + rounds
            };
            assert!(wait_for(forked, Duration::from_secs(20)).await);
            assert!(wait_for(&mut settled, Duration::from_secs(20)).await);
            let sampled = sampler.sample(&tree, &roots);
            let walked = component_memory(&tree, &roots);
            assert!(close(&sampled, &walked), "{sampled:?} vs {walked:?}");
            assert!(
                sampled["forker"] > before["forker"],
                "{sampled:?} vs {before:?}"
            );
            before = sampled;
            if sampler.full_walks() == walks {
                found = true;
                break;
            }
        }
        assert!(found, "every sample after a fork walked the whole tree");

        // A process of the tree goes: the next sample walks it all again, without it.
        let gone = &mut reaper.children[0];
        gone.kill().expect("kill");
        // This process reaps it, or the reaper of adopted orphans does first.
        let _ = gone.wait();
        let walks = sampler.full_walks();
        let sampled = sampler.sample(&tree, &roots);
        assert_eq!(sampler.full_walks(), walks + 1);
        assert!(!sampled.contains_key("quiet0"));
        assert!(close(&sampled, &component_memory(&tree, &roots)));
    })
    .await;
}
