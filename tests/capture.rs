//! Kernel integration tests (root, real programs): a child in a fresh monitored cgroup does a
//! known list of things and each must arrive with the right agent, kind and arguments; the same
//! actions outside monitored cgroups produce nothing; record -> replay gives identical events.

mod common;

use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    net::TcpListener,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    time::Duration,
};

use common::*;
use serde_json::Value;

#[test]
fn monitored_agent_actions_arrive_with_agent_kind_and_arguments() {
    let cgroups = TestCgroups::new("capture");
    let agent = cgroups.dir("agents/fraud/agent-7");
    let outside = cgroups.dir("outside");
    let tmp = tempfile::tempdir().unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"ok\n");
        }
    });

    let listener6 = TcpListener::bind("[::1]:0").unwrap();
    let port6 = listener6.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener6.incoming() {});
    // A port for the agent to accept on; the test keeps connecting until it does.
    let accept_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let config = format!(
        "watch: [{}]\nsnapshot_interval_ms: 100\nrescan_interval_ms: 50\n",
        cgroups.root.join("agents").display()
    );
    let daemon = Daemon::start(tmp.path(), &config, None);

    let steps = |tag: &str| -> Vec<String> {
        let p = |n: &str| tmp.path().join(format!("{tag}-{n}")).display().to_string();
        std::fs::write(p("input.csv"), "txn,1\n").unwrap();
        vec![
            "getppid:1000".into(),
            format!("read:{}", p("input.csv")),
            format!("write:{}", p("report.txt")),
            format!("chmod:{}:600", p("report.txt")),
            format!("rename:{}:{}", p("report.txt"), p("final.txt")),
            format!("unlink:{}", p("final.txt")),
            format!("connect:127.0.0.1:{port}"),
            format!("connect:[::1]:{port6}"),
            "dns:fraud-model.internal@127.0.0.1:53".into(),
            "exec:/bin/true".into(),
            "exit:7".into(),
        ]
    };
    let dialer = std::thread::spawn(move || {
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", accept_port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let mut inside = steps("inside");
    inside.insert(0, format!("accept:127.0.0.1:{accept_port}"));
    let (pid, code) = workload_in(&agent, &inside);
    assert_eq!(code, 7);
    assert!(dialer.join().unwrap(), "the agent accepted a connection");
    let (outside_pid, code) = workload_in(&outside, &steps("outside"));
    assert_eq!(code, 7);
    // One snapshot interval and a drain tick so the counters of the exited agent are read.
    std::thread::sleep(Duration::from_millis(300));
    let daemon_pid = daemon.pid();
    let events = daemon.stop();

    // Nothing from outside monitored cgroups, nothing from the daemon itself.
    for e in &events {
        assert_ne!(
            e["pid"], outside_pid,
            "event from an unmonitored process: {e}"
        );
        assert_ne!(e["pid"], daemon_pid, "event from the daemon: {e}");
        assert!(
            !e.to_string().contains("outside-"),
            "unmonitored path leaked: {e}"
        );
    }

    let mine: Vec<&Value> = events.iter().filter(|e| e["pid"] == pid).collect();
    for e in &mine {
        assert_eq!(e["agent"]["id"], "agent-7", "{e}");
        assert_eq!(e["agent"]["class"], "fraud", "{e}");
    }
    let has = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        mine.iter().any(|e| e["kind"] == kind && pred(e))
    };
    let ends =
        |e: &Value, f: &str, suffix: &str| e[f].as_str().is_some_and(|p| p.ends_with(suffix));

    assert!(
        has("exec", &|e| ends(e, "filename", "agent-monitor")
            && e["ret"] == 0),
        "exec of the workload"
    );
    assert!(
        has("open", &|e| ends(e, "path", "inside-input.csv")
            && e["ret"].as_i64() >= Some(0)),
        "open of input"
    );
    assert!(
        has("open", &|e| ends(e, "path", "inside-report.txt")
            && e["flags"].as_u64().unwrap() & 0o100 != 0),
        "open with O_CREAT of the report"
    );
    assert!(
        has("chmod", &|e| ends(e, "path", "inside-report.txt")
            && e["mode"] == 0o600),
        "chmod"
    );
    assert!(
        has("rename", &|e| ends(e, "old_path", "inside-report.txt")
            && ends(e, "new_path", "inside-final.txt")),
        "rename"
    );
    assert!(
        has("unlink", &|e| ends(e, "path", "inside-final.txt")
            && e["ret"] == 0),
        "unlink"
    );
    assert!(
        has("connect", &|e| e["addr"] == "127.0.0.1"
            && e["port"] == port
            && e["sock_type"] == 1),
        "connect to the loopback listener"
    );
    assert!(
        has("connect", &|e| e["addr"] == "::1"
            && e["port"] == port6
            && e["family"] == 10),
        "IPv6 connect to the loopback listener"
    );
    assert!(
        has("bind", &|e| e["port"] == accept_port),
        "bind of the listening socket"
    );
    assert!(
        has("accept", &|e| e["ret"].as_i64() >= Some(0)
            && e["addr"] == "127.0.0.1"),
        "accept of the test's connection, with the peer address"
    );
    assert!(has("udp_send", &|e| e["port"] == 53), "UDP send to port 53");
    assert!(
        has("fork", &|e| e["thread"] == false
            && e["child"].as_i64() > Some(0)),
        "fork for the exec"
    );
    assert!(has("exit", &|e| e["code"] == 7), "exit with code 7");

    // The child of the fork execs /bin/true in the same agent cgroup.
    assert!(
        of_kind(&events, "exec")
            .any(|e| e["filename"] == "/bin/true" && e["agent"]["id"] == "agent-7"),
        "exec of /bin/true by the child"
    );
    // DNS questions come from the packet hook (no pid) but carry the agent.
    assert!(
        of_kind(&events, "dns_query")
            .any(|e| e["name"] == "fraud-model.internal" && e["agent"]["id"] == "agent-7"),
        "DNS query name"
    );
    // Per-agent syscall counters: at least the 1000 getppid calls.
    let getppid: u64 = of_kind(&events, "syscall_count")
        .filter(|e| e["agent"]["id"] == "agent-7" && e["name"] == "getppid")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert!(getppid >= 1000, "getppid count {getppid}");
    // The syscall stream of the workload thread contains getppid (110) runs.
    assert!(
        mine.iter().any(|e| e["kind"] == "syscalls"
            && e["ids"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| *i == 110)
                .count()
                > 10),
        "syscall id stream"
    );
    // Flow bytes of the TCP connection.
    assert!(
        of_kind(&events, "flow_bytes")
            .any(|e| e["agent"]["id"] == "agent-7" && e["bytes_out"].as_u64() > Some(0)),
        "per-flow bytes"
    );
    assert_eq!(
        of_kind(&events, "lost").count(),
        0,
        "no kernel losses in a small run"
    );
}

/// A thread that moves between CPUs keeps its syscall ids in order: round r pins it to the
/// next CPU (sched_setaffinity, 203) and calls getppid (110) r times, so the stream must read
/// 203, 110 x1, 203, 110 x2, ... Ids left in a CPU's batch when the thread moved away came out
/// after later ones, and the sequence models learned n-grams no thread ever made.
#[test]
fn syscall_ids_stay_in_order_when_the_thread_changes_cpu() {
    const ROUNDS: usize = 60;
    let cgroups = TestCgroups::new("hop");
    let agent = cgroups.dir("agents/fraud/agent-h");
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "watch: [{}]\nsnapshot_interval_ms: 100\n",
        cgroups.root.join("agents").display()
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let (pid, code) = workload_in(&agent, &[format!("hop:{ROUNDS}")]);
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_millis(250));
    let events = daemon.stop();

    let ids: Vec<u64> = of_kind(&events, "syscalls")
        .filter(|e| e["pid"] == pid)
        .flat_map(|e| e["ids"].as_array().unwrap().iter())
        .map(|i| i.as_u64().unwrap())
        .filter(|i| *i == 110 || *i == 203)
        .collect();
    let first = ids.iter().position(|i| *i == 203).expect("a CPU hop");
    let runs: Vec<usize> = ids[first + 1..]
        .split(|i| *i == 203)
        .map(<[u64]>::len)
        .collect();
    assert_eq!(
        runs,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "getppid runs between CPU hops, in stream order"
    );
}

#[test]
fn recorded_session_replays_to_identical_events() {
    let cgroups = TestCgroups::new("replay");
    let agent = cgroups.dir("agents/onboarding/agent-r");
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "watch: [{}]\nsnapshot_interval_ms: 100\n",
        cgroups.root.join("agents").display()
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let trace = daemon.trace.clone();
    let (_, code) = workload_in(
        &agent,
        &[
            "getppid:100".into(),
            "read:/etc/hostname".into(),
            "exec:/bin/true".into(),
        ],
    );
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_millis(250));
    let live = daemon.stop();
    assert!(
        live.iter().any(|e| e["kind"] == "exec"),
        "live run saw the workload"
    );

    let out = tmp.path().join("replayed.jsonl");
    let status = std::process::Command::new(BIN)
        .args([
            "replay",
            trace.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        read_jsonl(&out),
        live,
        "replay must decode to exactly the live events"
    );

    // A truncated copy fails cleanly, naming the offset, without a panic (exit code 1, not 101).
    let bytes = std::fs::read(&trace).unwrap();
    let cut = tmp.path().join("cut.amtrace");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let output = std::process::Command::new(BIN)
        .args(["replay", cut.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("truncated at offset"), "{stderr}");
}

#[test]
fn daemon_inside_a_monitored_cgroup_never_reports_itself() {
    let cgroups = TestCgroups::new("self");
    let own = cgroups.dir("agents/compliance/daemon-host");
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "watch: [{}]\nsnapshot_interval_ms: 100\n",
        cgroups.root.join("agents").display()
    );
    // The daemon runs in a cgroup it monitors: the kernel filter must still drop its own activity.
    let daemon = Daemon::start(tmp.path(), &config, Some(&own));
    let daemon_pid = daemon.pid();
    let (pid, _) = workload_in(&own, &["read:/etc/hostname".into()]);
    std::thread::sleep(Duration::from_millis(250));
    let events = daemon.stop();
    assert!(
        events.iter().any(|e| e["pid"] == pid),
        "a sibling process in the same cgroup is reported"
    );
    assert!(
        events.iter().all(|e| e["pid"] != daemon_pid),
        "the daemon reported itself"
    );
    // Its syscall counters are not charged to the agent either: a sibling that ran briefly
    // made far fewer syscalls than a daemon polling every 5 ms for a second would.
    let counted: u64 = of_kind(&events, "syscall_count")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert!(
        counted < 5_000,
        "syscalls counted for the cgroup: {counted}"
    );
}

/// A program cannot fault pages in: a path on a page the process has not touched yet is
/// unreadable at syscall entry. The open must still arrive with its path (read again at exit,
/// once the syscall has faulted the page in), as the first open of a fresh process often is.
#[test]
fn path_on_a_page_not_mapped_at_entry_arrives_with_its_path() {
    let cgroups = TestCgroups::new("coldpath");
    let agent = cgroups.dir("agents/fraud/cold");
    let tmp = tempfile::tempdir().unwrap();
    let config = format!("watch: [{}]\n", cgroups.root.join("agents").display());
    let daemon = Daemon::start(tmp.path(), &config, None);

    // The path alone in a file the child maps: a fresh mapping has no page table entry until
    // something touches it.
    let name = tmp.path().join("name");
    std::fs::write(&name, b"/etc/hostname\0").unwrap();
    let file = std::fs::File::open(&name).unwrap();
    let pid = in_child_in(&agent, || {
        // SAFETY: only async-signal-safe calls (mmap, open) on a file the parent opened.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            );
            page != libc::MAP_FAILED && libc::open(page.cast(), libc::O_RDONLY) >= 0
        }
    });
    std::thread::sleep(Duration::from_millis(250));
    let events = daemon.stop();
    let opens: Vec<&Value> = of_kind(&events, "open")
        .filter(|e| e["pid"] == pid)
        .collect();
    assert!(
        opens
            .iter()
            .any(|e| e["path"] == "/etc/hostname" && e["ret"].as_i64() >= Some(0)),
        "the child's open: {opens:?}"
    );
}

/// The reader maps the ring buffer's data once, so a record that runs past its end arrives in
/// two pieces that the reader joins. Opens, several times the size of a 1 MiB buffer in all,
/// must each arrive whole and in order: a badly joined record would show as a wrong path, a
/// misread length as a lost or garbled record after it.
#[test]
fn records_that_wrap_around_the_ring_buffer_arrive_whole() {
    const OPENS: usize = 12_000;
    let cgroups = TestCgroups::new("wrap");
    let agent = cgroups.dir("agents/fraud/wrap");
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "watch: [{}]\nring_buffer_mib: 1\n",
        cgroups.root.join("agents").display()
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    // Paths of 24 to 223 bytes (whole in a record) that name their index; none exists (a
    // failed open is an event too).
    let path = |i: usize| format!("/nonexistent/wrap-{i:05}-{}", "x".repeat(i * 7 % 200));
    let paths: Vec<CString> = (0..OPENS).map(|i| CString::new(path(i)).unwrap()).collect();
    let pid = in_child_in(&agent, || {
        for (i, p) in paths.iter().enumerate() {
            // SAFETY: open and nanosleep are async-signal-safe; the paths were made before.
            unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
            // A pause every few KB of records: the test is about how records are read, not
            // about outrunning the reader (of a debug build, in tests).
            if i % 20 == 19 {
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 2_000_000,
                };
                // SAFETY: as above.
                unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
            }
        }
        true
    });
    std::thread::sleep(Duration::from_millis(250));
    let events = daemon.stop();
    let lost: Vec<&Value> = of_kind(&events, "lost").collect();
    assert!(lost.is_empty(), "kernel losses: {lost:?}");
    let got: Vec<&str> = of_kind(&events, "open")
        .filter(|e| e["pid"] == pid)
        .filter_map(|e| e["path"].as_str())
        .filter(|p| p.starts_with("/nonexistent/wrap-"))
        .collect();
    let bytes = got.len() * std::mem::size_of::<agent_monitor_common::PathEvent>();
    assert!(
        bytes > 3 << 20,
        "{bytes} bytes of opens: the buffer wrapped too few times"
    );
    assert_eq!(got.len(), OPENS, "every open arrives");
    for (i, p) in got.iter().enumerate() {
        assert_eq!(*p, path(i), "open {i}");
    }
}

/// Runs `child` in a forked process that first moves itself into `cgroup`, waits for it and
/// checks that it succeeded; returns its pid. The test process has threads, so `child` may make
/// only async-signal-safe calls on data made before the fork.
fn in_child_in(cgroup: &std::path::Path, child: impl FnOnce() -> bool) -> i32 {
    let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    // SAFETY: the child makes only async-signal-safe calls (open, write, `child`) and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above; "0" moves the writing process into the cgroup.
        let moved = unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            libc::write(fd, b"0".as_ptr().cast(), 1) == 1
        };
        let ok = moved && child();
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: {status}"
    );
    pid
}
