//! Snapshots on the real system: a real cgroup v2, a real `sleep` child with a secret in its
//! environment, an open file and a listening socket. Needs root; skipped (with a note) without.

use std::{
    fs,
    net::TcpListener,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use sha2::Digest as _;

use super::*;
use crate::{
    cgroup,
    event::{AgentRef, Body, Event},
    respond::flight::{FlightConfig, FlightRecorder},
};

const AGENT: &str = "snap-test-agent";

/// A cgroup with a child in it; killed, thawed and removed on drop.
struct Sandbox {
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("cgroup.freeze"), "0");
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        cgroup::remove_tree(&self.dir);
    }
}

fn can_run() -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to create cgroups");
        return None;
    }
    match cgroup::v2_mount() {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn key_file(dir: &Path) -> (PathBuf, SigningKey) {
    let seed = [0x5au8; 32];
    let path = dir.join("signing.key");
    fs::write(&path, format!("{}\n", hex::encode(seed))).expect("write key");
    (path, SigningKey::from_bytes(&seed))
}

/// Starts `sleep 60` in a fresh cgroup with SECRET=xyz in its environment, `file` open as fd 3
/// and `listener` as fd 4.
fn sandbox(mount: &Path, tag: &str, file: &fs::File, listener: &TcpListener) -> Sandbox {
    let dir = mount.join(format!("agent-monitor-test-{tag}-{}", std::process::id()));
    cgroup::remove_tree(&dir);
    cgroup::create(&dir).expect("create cgroup");
    let mut sb = Sandbox { dir, child: None };
    let fds = [(file.as_raw_fd(), 3), (listener.as_raw_fd(), 4)];
    let mut cmd = Command::new("sleep");
    cmd.arg("60").env("SECRET", "xyz");
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(move || {
            for (src, dst) in fds {
                let r = if src == dst {
                    libc::fcntl(dst, libc::F_SETFD, 0)
                } else {
                    libc::dup2(src, dst)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cgroup::spawn_in(&sb.dir, &mut cmd).expect("spawn sleep");
    let pid = child.id();
    sb.child = Some(child);
    // Wait for the exec: before it the child is still this test binary.
    let start = Instant::now();
    while !fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|p| p.file_name().is_some_and(|n| n == "sleep"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sleep did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    sb
}

fn event(ts: u64) -> Event {
    Event {
        ts_ns: ts,
        kind_id: 0,
        cgroup_id: 1,
        pid: 1,
        tid: 1,
        agent: Some(AgentRef::new(Arc::from(AGENT), Arc::from("fraud"))),
        truncated: false,
        body: Body::Exit { code: Some(0) },
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_slice(&fs::read(path).expect("read bundle file")).expect("bundle json")
}

fn frozen(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .expect("cgroup.events")
        .lines()
        .any(|l| l == "frozen 1")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir").flatten() {
        fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn snapshot_of_a_real_cgroup_freezes_collects_signs_and_thaws() {
    let Some(mount) = can_run() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let evidence = tmp.path().join("customer-ledger.csv");
    fs::write(&evidence, "id,amount\n").expect("write");
    let file = fs::File::open(&evidence).expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let sb = sandbox(&mount, "snapshot", &file, &listener);
    let pid = sb.child.as_ref().map(Child::id).expect("child");

    let (key_path, key) = key_file(tmp.path());
    let flight = Arc::new(FlightRecorder::new(FlightConfig::default()));
    for ts in 0..10 {
        flight.push(&event(ts));
    }
    let snapper = Snapshotter::new(
        SnapshotConfig {
            output_dir: tmp.path().join("bundles"),
            signing_key_file: key_path,
            events: 4,
            freeze_timeout_ms: 5_000,
        },
        Some(flight),
    );
    let record = snapper.take(&SnapshotRequest {
        agent_id: AGENT,
        cgroup_dir: &sb.dir,
        freeze: true,
        keep_frozen: false,
    });
    assert!(record.ok, "{record:?}");
    assert!(record.frozen_during_collection, "{record:?}");
    assert!(!record.frozen_now);
    assert!(!frozen(&sb.dir), "thawed after");
    assert_eq!(record.processes, 1);
    assert_eq!(record.gone, 0);
    let bundle = record.bundle.clone().expect("bundle path");

    // The cgroup state says frozen at start and end of collection.
    let cg: CgroupState = read_json(&bundle.join("cgroup.json"));
    assert!(cg.frozen_at_start && cg.frozen_at_end && !cg.frozen_before);

    // The process, its executable's hash, the open file, the socket, the environment.
    let tree: ProcessTree = read_json(&bundle.join("processes.json"));
    assert_eq!(tree.roots, vec![pid]);
    let p: ProcessInfo = read_json(&bundle.join(format!("process-{pid}.json")));
    assert!(!p.gone);
    assert_eq!(p.name.as_deref(), Some("sleep"));
    assert_eq!(p.cmdline, Some(vec!["sleep".to_string(), "60".to_string()]));
    let exe = p.exe.clone().expect("exe");
    let expected = hex::encode(sha2::Sha256::digest(fs::read(&exe).expect("read exe")));
    assert_eq!(p.exe_sha256.as_deref(), Some(expected.as_str()));
    let root_ids = Some([0, 0, 0, 0]);
    assert_eq!((p.uid, p.gid), (root_ids, root_ids));
    let evidence_path = evidence.display().to_string();
    assert!(
        p.fds.iter().any(|f| f.fd == 3 && f.target == evidence_path),
        "{:?}",
        p.fds
    );
    let sock = p
        .fds
        .iter()
        .find(|f| f.fd == 4)
        .and_then(|f| f.socket.clone())
        .expect("listening socket named");
    assert_eq!(sock.proto, "tcp");
    assert_eq!(sock.state, "LISTEN");
    assert_eq!(sock.local, format!("127.0.0.1:{port}"));
    assert!(p.maps.iter().any(|m| m.path == exe));
    let secret = p
        .environ
        .iter()
        .find(|e| e.name == "SECRET")
        .expect("SECRET listed");
    assert_eq!(
        secret.value_sha256,
        hex::encode(sha2::Sha256::digest(b"xyz"))
    );
    for e in fs::read_dir(&bundle).expect("bundle dir").flatten() {
        let text = fs::read_to_string(e.path()).expect("text");
        assert!(!text.contains("xyz"), "{:?} holds the secret", e.path());
    }

    // The flight recorder's last events.
    let events: Vec<Event> = read_json(&bundle.join("events.json"));
    let ts: Vec<u64> = events.iter().map(|e| e.ts_ns).collect();
    assert_eq!(ts, vec![6, 7, 8, 9]);

    // The manifest verifies, and its digest is the one returned.
    let public = key.verifying_key();
    let manifest = verify_bundle(&bundle, &public).expect("verifies");
    let digest = hex::encode(sha2::Sha256::digest(
        fs::read(bundle.join(MANIFEST)).expect("manifest"),
    ));
    assert_eq!(record.manifest_sha256.as_deref(), Some(digest.as_str()));
    assert_eq!(manifest.files.len(), 4);
    let from_hex = parse_verifying_key(hex::encode(public.to_bytes()).as_bytes()).expect("key");
    assert!(verify_bundle(&bundle, &from_hex).is_ok());
    let other = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
    assert!(verify_bundle(&bundle, &other).is_err());

    // A changed byte in any file fails verification; so does an added file.
    for e in fs::read_dir(&bundle).expect("bundle dir").flatten() {
        let name = e.file_name();
        let copy = tmp.path().join("tampered").join(&name);
        copy_dir(&bundle, &copy);
        let target = copy.join(&name);
        let mut bytes = fs::read(&target).expect("read");
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
        fs::write(&target, &bytes).expect("write");
        assert!(
            verify_bundle(&copy, &public).is_err(),
            "changed byte in {name:?} still verifies"
        );
    }
    let extra = tmp.path().join("extra");
    copy_dir(&bundle, &extra);
    fs::write(extra.join("planted.json"), "{}").expect("write");
    assert!(verify_bundle(&extra, &public).is_err());

    // Kept frozen when asked; thaw is the undo, and is idempotent.
    let kept = snapper.take(&SnapshotRequest {
        agent_id: AGENT,
        cgroup_dir: &sb.dir,
        freeze: true,
        keep_frozen: true,
    });
    assert!(kept.ok && kept.frozen_now, "{kept:?}");
    assert!(frozen(&sb.dir));
    assert!(kept.undo.contains("thaw"));
    assert_ne!(kept.bundle, record.bundle);
    for _ in 0..2 {
        let thawed = snapper.thaw(&sb.dir);
        assert!(thawed.ok, "{thawed:?}");
        assert!(!frozen(&sb.dir));
    }
    drop(file);
}

#[test]
fn a_cgroup_frozen_before_stays_frozen_and_an_unfrozen_snapshot_works() {
    let Some(mount) = can_run() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("f");
    fs::write(&f, "x").expect("write");
    let file = fs::File::open(&f).expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let sb = sandbox(&mount, "snapshot-prefrozen", &file, &listener);
    let (key_path, _) = key_file(tmp.path());
    let snapper = Snapshotter::new(
        SnapshotConfig {
            output_dir: tmp.path().join("bundles"),
            signing_key_file: key_path,
            events: 4,
            freeze_timeout_ms: 5_000,
        },
        None,
    );

    let unfrozen = snapper.take(&SnapshotRequest {
        agent_id: "../weird/id",
        cgroup_dir: &sb.dir,
        freeze: false,
        keep_frozen: false,
    });
    assert!(
        unfrozen.ok && !unfrozen.frozen_during_collection,
        "{unfrozen:?}"
    );
    let bundle = unfrozen.bundle.clone().expect("bundle");
    assert_eq!(bundle.parent(), Some(tmp.path().join("bundles").as_path()));

    fs::write(sb.dir.join("cgroup.freeze"), "1").expect("freeze");
    let start = Instant::now();
    while !frozen(&sb.dir) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let record = snapper.take(&SnapshotRequest {
        agent_id: AGENT,
        cgroup_dir: &sb.dir,
        freeze: true,
        keep_frozen: false,
    });
    assert!(record.ok && record.frozen_during_collection, "{record:?}");
    assert!(record.frozen_now, "not ours to thaw");
    assert!(frozen(&sb.dir));
    drop(file);
}

#[test]
fn bad_inputs_are_records_not_panics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let snapper = Snapshotter::new(
        SnapshotConfig {
            output_dir: tmp.path().join("bundles"),
            signing_key_file: tmp.path().join("missing.key"),
            events: 4,
            freeze_timeout_ms: 100,
        },
        None,
    );
    let record = snapper.take(&SnapshotRequest {
        agent_id: "a",
        cgroup_dir: tmp.path(),
        freeze: true,
        keep_frozen: false,
    });
    assert!(!record.ok);
    assert!(
        record.detail.contains("not a cgroup v2 directory"),
        "{}",
        record.detail
    );
    assert!(!snapper.thaw(tmp.path()).ok);

    // A cgroup-looking directory with a bad key: error, and no bundle left behind.
    let fake = tmp.path().join("fake");
    fs::create_dir(&fake).expect("mkdir");
    fs::write(fake.join("cgroup.procs"), "").expect("write");
    fs::write(fake.join("cgroup.events"), "populated 0\nfrozen 0\n").expect("write");
    fs::write(fake.join("cgroup.freeze"), "0").expect("write");
    let record = snapper.take(&SnapshotRequest {
        agent_id: "a",
        cgroup_dir: &fake,
        freeze: false,
        keep_frozen: false,
    });
    assert!(!record.ok);
    assert!(record.detail.contains("missing.key"), "{}", record.detail);
    assert!(
        fs::read_dir(tmp.path().join("bundles")).map_or(true, |mut d| d.next().is_none()),
        "no partial bundle left"
    );

    fs::write(tmp.path().join("missing.key"), "too short").expect("write");
    assert!(load_signing_key(&tmp.path().join("missing.key")).is_err());
    assert!(parse_verifying_key(b"zz").is_none());
}

/// The worker takes snapshots off the caller's thread: a submit returns at once, a second
/// submit for the same cgroup while the first is pending is the same snapshot, the record comes
/// back through `completed`, and a release (thaw) wins over `keep_frozen`.
#[test]
fn the_worker_snapshots_off_the_callers_thread_and_a_release_wins_over_keep_frozen() {
    let Some(mount) = can_run() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("f");
    fs::write(&f, "x").expect("write");
    let file = fs::File::open(&f).expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let sb = sandbox(&mount, "snapshot-worker", &file, &listener);
    let (key_path, _) = key_file(tmp.path());
    let worker = SnapshotWorker::start(Snapshotter::new(
        SnapshotConfig {
            output_dir: tmp.path().join("bundles"),
            signing_key_file: key_path,
            events: 4,
            freeze_timeout_ms: 5_000,
        },
        None,
    ))
    .expect("worker");

    worker.submit(1u32, AGENT, &sb.dir, true).expect("queued");
    assert_eq!(
        worker.submit(2, AGENT, &sb.dir, true),
        Err(NotQueued::AlreadyRunning),
        "one snapshot per cgroup at a time"
    );
    let done = worker.completed(Some(Duration::from_secs(20)));
    assert_eq!(done.len(), 1, "{done:?}");
    let (tag, record) = &done[0];
    assert_eq!(*tag, 1);
    assert!(record.ok && record.frozen_during_collection, "{record:?}");
    assert!(record.bundle.as_ref().is_some_and(|b| b.is_dir()));
    assert!(record.frozen_now && frozen(&sb.dir), "kept frozen");
    assert!(!worker.busy());

    // Released while the next snapshot is pending: it must not leave the cgroup frozen.
    assert!(worker.thaw(&sb.dir).ok);
    worker
        .submit(3, AGENT, &sb.dir, true)
        .expect("queued again");
    assert!(worker.thaw(&sb.dir).ok);
    let done = worker.completed(Some(Duration::from_secs(20)));
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].1.ok, "{:?}", done[0].1);
    assert!(!done[0].1.frozen_now, "{:?}", done[0].1);
    assert!(!frozen(&sb.dir), "the release won");
    drop(file);
}
