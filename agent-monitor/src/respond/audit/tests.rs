//! Audit log tests on real files in temporary directories.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::json;

use super::{keys::KeyFiles, *};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Fixture {
    _dir: tempfile::TempDir,
    keys: KeyFiles,
    log: PathBuf,
}

fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let keys = keygen(&dir.path().join("keys"))?;
    let log = dir.path().join("audit.jsonl");
    Ok(Fixture {
        _dir: dir,
        keys,
        log,
    })
}

impl Fixture {
    fn open(&self) -> Result<AuditLog, AuditError> {
        AuditLog::from_config(&AuditConfig {
            path: self.log.clone(),
            signing_key: self.keys.signing_key.clone(),
            token_key: self.keys.token_key.clone(),
        })
    }

    fn ring(&self) -> Result<KeyRing, AuditError> {
        KeyRing::load(&[&self.keys.public_key])
    }

    fn verify(&self, expect: &Expect) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
        verify_file(&self.log, &self.ring()?, expect)
    }

    /// A log of `n` entries of every kind.
    fn write(&self, n: u64) -> Result<AuditLog, AuditError> {
        let mut log = self.open()?;
        for i in 0..n {
            let kind = Kind::ALL[usize::try_from(i).unwrap_or(0) % Kind::ALL.len()];
            log.append(
                kind,
                Some("fraud-alice-7"),
                Some("fraud"),
                json!({"i": i, "score": 0.5}),
            )?;
        }
        Ok(log)
    }
}

fn lines(path: &Path) -> Result<Vec<String>, std::io::Error> {
    Ok(fs::read_to_string(path)?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn write_lines(path: &Path, lines: &[String]) -> std::io::Result<()> {
    fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
}

#[test]
fn append_verify_round_trip() -> TestResult {
    let fx = fixture()?;
    let log = fx.write(5)?;
    let report = fx.verify(&Expect::default())??;
    assert_eq!(report.entries, 5);
    assert_eq!(report.head_seq, 5);
    assert_eq!(log.head(), (5, report.head_digest.as_str()));
    assert_eq!(report.keys, vec![(fx.keys.key_id.clone(), 5)]);
    let expect = Expect {
        seq: Some(5),
        head: Some(report.head_digest.clone()),
    };
    fx.verify(&expect)??;

    let text = fs::read_to_string(&fx.log)?;
    assert!(!text.contains("alice"), "agent ids are tokenised");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or(""))?;
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev"], GENESIS_PREV);
    assert_eq!(first["kind"], "startup");
    assert_eq!(first["agent"], json!(log.token("fraud-alice-7")));
    assert_eq!(first["key_id"], json!(fx.keys.key_id));
    Ok(())
}

#[test]
fn empty_log_verifies() -> TestResult {
    let fx = fixture()?;
    let log = fx.open()?;
    assert_eq!(log.head(), (0, GENESIS_PREV));
    let report = fx.verify(&Expect::default())??;
    assert_eq!(
        (report.entries, report.head_digest.as_str()),
        (0, GENESIS_PREV)
    );
    Ok(())
}

#[test]
fn resume_after_reopening() -> TestResult {
    let fx = fixture()?;
    drop(fx.write(2)?);
    let mut log = fx.open()?;
    assert_eq!(log.head().0, 2);
    assert_eq!(log.append(Kind::Release, None, None, json!({}))?, 3);
    drop(log);
    let mut log = fx.open()?;
    assert_eq!(
        log.append(Kind::Approval, Some("bob"), None, json!({"by": "x"}))?,
        4
    );
    assert_eq!(
        fx.verify(&Expect {
            seq: Some(4),
            head: None
        })??
        .entries,
        4
    );
    Ok(())
}

#[test]
fn data_must_be_an_object() -> TestResult {
    let fx = fixture()?;
    let mut log = fx.open()?;
    let err = log.append(Kind::Decision, None, None, json!([1])).err();
    assert!(
        matches!(err, Some(AuditError::DataNotObject { .. })),
        "{err:?}"
    );
    Ok(())
}

/// Every byte of a 5-entry log, changed by one bit, is detected at or before its line. The lines
/// before the changed one are byte-identical to the original, so the check resumes from the
/// verifier's state after them instead of verifying them again (that keeps the test fast in
/// debug builds); `full_verify_agrees` checks that resuming gives the whole-file verdict.
#[test]
fn every_single_byte_change_is_detected() -> TestResult {
    let fx = fixture()?;
    drop(fx.write(5)?);
    let ring = fx.ring()?;
    let bytes = fs::read(&fx.log)?;
    // The verifier's state before each line, and where each line starts.
    let mut states = vec![Verifier::new(&ring)];
    let mut starts = vec![0usize];
    for l in bytes.split_inclusive(|&b| b == b'\n') {
        let mut v = states.last().cloned().ok_or("no state")?;
        v.push(l)?;
        states.push(v);
        starts.push(starts.last().copied().unwrap_or(0) + l.len());
    }
    let mut checked = 0;
    for line in 0..states.len() - 1 {
        for pos in starts[line]..starts[line + 1] {
            let mut changed = bytes.clone();
            changed[pos] ^= 1 << (pos % 8);
            let verdict = resume(states[line].clone(), &changed[starts[line]..]);
            let line_no = u64::try_from(line + 1)?;
            match verdict {
                Ok(_) => panic!("byte {pos} (line {line_no}) changed and the log still verifies"),
                Err(f) => assert!(f.line <= line_no, "byte {pos} on line {line_no}: {f}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, bytes.len());
    Ok(())
}

fn resume(mut v: Verifier<'_>, rest: &[u8]) -> Result<VerifyReport, VerifyFailure> {
    for l in rest.split_inclusive(|&b| b == b'\n') {
        v.push(l)?;
    }
    v.finish(&Expect::default())
}

#[test]
fn full_verify_agrees() -> TestResult {
    let fx = fixture()?;
    drop(fx.write(3)?);
    let ring = fx.ring()?;
    let mut bytes = fs::read(&fx.log)?;
    let second = bytes.iter().position(|&b| b == b'\n').ok_or("one line")? + 1;
    let mut state = Verifier::new(&ring);
    state.push(&bytes[..second])?;
    for pos in [second, second + 20, bytes.len() - 1] {
        bytes[pos] ^= 4;
        let full = verify_reader(&bytes[..], &ring, &Expect::default()).err();
        let resumed = resume(state.clone(), &bytes[second..]).err();
        assert!(full.is_some());
        assert_eq!(full, resumed, "byte {pos}");
        bytes[pos] ^= 4;
    }
    Ok(())
}

#[test]
fn truncated_last_line() -> TestResult {
    let fx = fixture()?;
    drop(fx.write(5)?);
    let len = fs::metadata(&fx.log)?.len();
    let f = fs::OpenOptions::new().write(true).open(&fx.log)?;
    f.set_len(len - 10)?;
    let fail = fx.verify(&Expect::default())?.err();
    assert_eq!(
        fail.map(|f| (f.line, f.reason)),
        Some((5, FailReason::Incomplete))
    );
    let err = fx.open().err();
    assert!(
        matches!(
            &err,
            Some(AuditError::Tail {
                line: 5,
                reason: FailReason::Incomplete,
                ..
            })
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn removed_tail_needs_an_anchor() -> TestResult {
    let fx = fixture()?;
    drop(fx.write(5)?);
    let mut l = lines(&fx.log)?;
    l.pop();
    write_lines(&fx.log, &l)?;
    // Without an anchor a shortened log verifies: that is what --expect-seq is for.
    assert_eq!(fx.verify(&Expect::default())??.head_seq, 4);
    let fail = fx
        .verify(&Expect {
            seq: Some(5),
            head: None,
        })?
        .err();
    assert!(matches!(
        fail.map(|f| f.reason),
        Some(FailReason::HeadSeq {
            expected: 5,
            found: 4
        })
    ));
    Ok(())
}

#[test]
fn reordered_and_deleted_entries() -> TestResult {
    let fx = fixture()?;
    drop(fx.write(5)?);
    let orig = lines(&fx.log)?;

    let mut swapped = orig.clone();
    swapped.swap(1, 2);
    write_lines(&fx.log, &swapped)?;
    let fail = fx.verify(&Expect::default())?.err();
    assert_eq!(
        fail.map(|f| (f.line, f.seq, f.reason)),
        Some((
            2,
            Some(3),
            FailReason::Seq {
                expected: 2,
                found: 3
            }
        ))
    );

    let mut deleted = orig.clone();
    deleted.remove(2);
    write_lines(&fx.log, &deleted)?;
    let fail = fx.verify(&Expect::default())?.err();
    assert_eq!(fail.map(|f| (f.line, f.seq)), Some((3, Some(4))));

    let mut first_gone = orig.clone();
    first_gone.remove(0);
    write_lines(&fx.log, &first_gone)?;
    let fail = fx.verify(&Expect::default())?.err();
    assert_eq!(fail.map(|f| (f.line, f.seq)), Some((1, Some(2))));

    let mut duplicated = orig;
    duplicated.insert(3, duplicated[2].clone());
    write_lines(&fx.log, &duplicated)?;
    let fail = fx.verify(&Expect::default())?.err();
    assert_eq!(fail.map(|f| (f.line, f.seq)), Some((4, Some(3))));
    Ok(())
}

#[test]
fn changed_tail_is_not_appended_to() -> TestResult {
    let fx = fixture()?;
    drop(fx.write(3)?);
    let mut l = lines(&fx.log)?;
    l[2] = l[2].replace("\"i\":2", "\"i\":9");
    write_lines(&fx.log, &l)?;
    let err = fx.open().err();
    assert!(
        matches!(
            &err,
            Some(AuditError::Tail {
                line: 3,
                reason: FailReason::BadSignature,
                ..
            })
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn wrong_public_key() -> TestResult {
    let fx = fixture()?;
    let other = fixture()?;
    drop(fx.write(2)?);
    let fail = verify_file(&fx.log, &other.ring()?, &Expect::default())?.err();
    assert_eq!(
        fail.map(|f| (f.line, f.reason)),
        Some((
            1,
            FailReason::UnknownKey {
                key_id: fx.keys.key_id.clone()
            }
        ))
    );
    // Another signing key does not continue this log either.
    let err = AuditLog::from_config(&AuditConfig {
        path: fx.log.clone(),
        signing_key: other.keys.signing_key.clone(),
        token_key: other.keys.token_key.clone(),
    })
    .err();
    assert!(
        matches!(
            &err,
            Some(AuditError::Tail {
                reason: FailReason::UnknownKey { .. },
                ..
            })
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn malformed_key_files_are_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cases: [(&str, Option<&str>, &str); 5] = [
        ("missing.key", None, "No such file"),
        ("empty.key", Some("\n"), "empty"),
        ("short.key", Some("abcd\n"), "4 characters"),
        ("nothex.key", Some(&"zz".repeat(32)), "not hexadecimal"),
        (
            "pem.key",
            Some("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n"),
            "characters",
        ),
    ];
    for (name, content, why) in cases {
        let path = dir.path().join(name);
        if let Some(c) = content {
            fs::write(&path, c)?;
        }
        for err in [Signer::load(&path).err(), Tokenizer::load(&path).err()] {
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(why), "{name}: {msg}");
        }
        let msg = KeyRing::load(&[&path])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains(name) && msg.contains(why), "{msg}");
    }
    Ok(())
}

#[test]
fn keygen_modes_and_refusal() -> TestResult {
    let fx = fixture()?;
    for p in [
        &fx.keys.signing_key,
        &fx.keys.public_key,
        &fx.keys.token_key,
    ] {
        assert_eq!(
            fs::metadata(p)?.permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    let Some(dir) = fx.keys.signing_key.parent() else {
        return Err("no parent".into());
    };
    assert!(matches!(keygen(dir), Err(AuditError::KeyExists { .. })));
    let signer = Signer::load(&fx.keys.signing_key)?;
    assert_eq!(signer.key_id(), fx.keys.key_id);
    Ok(())
}

#[test]
fn concurrent_appends_keep_a_valid_chain() -> TestResult {
    let fx = Arc::new(fixture()?);
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let fx = Arc::clone(&fx);
            std::thread::spawn(move || -> Result<(), String> {
                let mut log = fx.open().map_err(|e| e.to_string())?;
                for i in 0..20 {
                    log.append(Kind::Action, Some("a"), None, json!({"t": t, "i": i}))
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "thread panicked")??;
    }
    assert_eq!(
        fx.verify(&Expect {
            seq: Some(40),
            head: None
        })??
        .entries,
        40
    );
    Ok(())
}
