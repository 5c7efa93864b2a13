//! `agent-monitor audit ...`: key generation, verification, tokens and manual entries of the
//! tamper-evident audit log (docs/AUDIT.md).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::ExitCode,
};

use agent_monitor::respond::audit::{
    self, AuditConfig, AuditLog, Expect, KeyRing, Kind, Tokenizer, Verifier,
};
use anyhow::Context as _;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Write a new Ed25519 signing key, its public key and a token key (mode 0600) into DIR.
    Keygen {
        /// Directory for audit-signing.key, audit-signing.pub and audit-token.key.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Verify a whole log: exit 0 only if every entry verifies, else name the first that fails.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// Trusted public key file (64 hex digits); repeat for logs spanning several keys.
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<PathBuf>,
        /// Fail unless the last entry has this seq (an anchor kept outside the log).
        #[arg(long)]
        expect_seq: Option<u64>,
        /// Fail unless the head digest (SHA-256 of the last entry) is this one.
        #[arg(long)]
        expect_head: Option<String>,
    },
    /// Print the verified entries (without signatures), stopping at the first that fails.
    Show {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// Trusted public key file; repeatable.
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<PathBuf>,
    },
    /// Print the token of each identifier, to find a person's or agent's entries.
    Token {
        /// Token key file (64 hex digits).
        #[arg(long)]
        token_key: PathBuf,
        /// Identifiers (agent ids, user names, pod names).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Append one entry (e.g. a human approval) and print its seq and the new head.
    Append {
        /// The audit log (created if missing).
        #[arg(long)]
        log: PathBuf,
        /// Ed25519 signing key file.
        #[arg(long)]
        signing_key: PathBuf,
        /// Token key file.
        #[arg(long)]
        token_key: PathBuf,
        /// startup, shutdown, decision, action, release, approval or anchor.
        #[arg(long)]
        kind: Kind,
        /// Agent id (tokenised before it is written).
        #[arg(long)]
        agent: Option<String>,
        /// Agent class.
        #[arg(long)]
        class: Option<String>,
        /// A JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
    },
}

pub fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        AuditCommand::Keygen { dir } => {
            let files = audit::keygen(dir)?;
            println!("key id      {}", files.key_id);
            println!("signing key {}", files.signing_key.display());
            println!("public key  {}", files.public_key.display());
            println!("token key   {}", files.token_key.display());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            file,
            public_keys,
            expect_seq,
            expect_head,
        } => {
            let keys = KeyRing::load(public_keys)?;
            let expect = Expect {
                seq: *expect_seq,
                head: expect_head.clone(),
            };
            match audit::verify_file(file, &keys, &expect)? {
                Ok(r) => {
                    let per_key: Vec<String> =
                        r.keys.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                    println!(
                        "OK {}: {} entries, head seq {}, head digest {} (keys {})",
                        file.display(),
                        r.entries,
                        r.head_seq,
                        r.head_digest,
                        if per_key.is_empty() {
                            "none".into()
                        } else {
                            per_key.join(", ")
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(f) => {
                    println!("FAIL {}: {f}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Show { file, public_keys } => show(file, &KeyRing::load(public_keys)?),
        AuditCommand::Token { token_key, ids } => {
            let t = Tokenizer::load(token_key)?;
            for id in ids {
                println!("{}\t{id}", t.token(id));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Append {
            log,
            signing_key,
            token_key,
            kind,
            agent,
            class,
            data,
        } => {
            let data: serde_json::Value =
                serde_json::from_str(data).context("--data is not JSON")?;
            let mut log = AuditLog::from_config(&AuditConfig {
                path: log.clone(),
                signing_key: signing_key.clone(),
                token_key: token_key.clone(),
            })?;
            let seq = log.append(*kind, agent.as_deref(), class.as_deref(), data)?;
            println!("seq {seq}, head digest {}", log.head().1);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show(file: &PathBuf, keys: &KeyRing) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut input = BufReader::new(f);
    let mut verifier = Verifier::new(keys);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        match verifier.push(&buf) {
            Ok(body) => println!("{}", serde_json::to_string(&body)?),
            Err(f) => {
                println!("FAIL {}: {f}", file.display());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}
