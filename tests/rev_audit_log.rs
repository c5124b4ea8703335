//! rev-audit: the local audit log after a rotation that renamed `audit.log` but could not open
//! a new one (EMFILE here; ENOSPC on inodes, EACCES after a permission change do the same).
//! `rotate` returns its error with `state.file` still the renamed file and `state.bytes`
//! unchanged, so every later line tries to rotate again: each attempt shifts the numbered
//! files up by one — moving the file being written with them — and deletes
//! `audit.log.<keep>`, which after `keep` lines is the file being written. From then on every
//! read is logged into an unlinked inode: lost without an error, long after the one failure.
//! (One test in its own binary: it lowers the process's open-file limit for a moment.)

use tierlog::serve::audit_log::AuditLog;

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

unsafe extern "C" {
    fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
}

const RLIMIT_NOFILE: i32 = 7;

#[test]
fn rev_audit_a_rotation_that_cannot_open_the_new_file_loses_no_later_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, 100, 5).unwrap();
    let line = |n: u32| format!("{{\"n\":{n:02},\"pad\":\"{}\"}}", "x".repeat(22)); // 40 bytes with \n
    log.write_line(&line(0));
    log.write_line(&line(1));
    // The next line rotates; let it rename but not open: no file descriptor left.
    let mut saved = Rlimit { cur: 0, max: 0 };
    assert_eq!(unsafe { getrlimit(RLIMIT_NOFILE, &mut saved) }, 0);
    let tight = Rlimit { cur: 0, max: saved.max }; // no new descriptor; open ones stay usable
    assert_eq!(unsafe { setrlimit(RLIMIT_NOFILE, &tight) }, 0);
    log.write_line(&line(2));
    assert_eq!(unsafe { setrlimit(RLIMIT_NOFILE, &saved) }, 0);
    // File descriptors are back: every later line must reach some file (5 old files of two
    // lines each keep far more than the 7 lines written from here).
    for n in 3..10 {
        log.write_line(&line(n));
        if std::env::var("REV_DEBUG").is_ok() {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    format!(
                        "{}:{}",
                        e.file_name().to_string_lossy(),
                        std::fs::read_to_string(e.path())
                            .unwrap()
                            .lines()
                            .map(|l| l[5..7].to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                })
                .collect();
            names.sort();
            eprintln!("after line {n}: {names:?}");
        }
    }
    drop(log);
    let mut found = Vec::new();
    for name in ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3", "audit.log.4", "audit.log.5"] {
        if let Ok(text) = std::fs::read_to_string(dir.path().join(name)) {
            found.extend(text.lines().map(|l| l[5..7].parse::<u32>().unwrap()));
        }
    }
    found.sort();
    let lost: Vec<u32> = (3..10).filter(|n| !found.contains(n)).collect();
    assert!(lost.is_empty(), "lines {lost:?} written after the failed rotation are in no file (found {found:?})");
}
