//! Representative agent workloads: small loops that behave like the bank's agent classes, used to
//! record the traces the shipped models are trained on, by the demo, and as the benign cover that
//! drills hide attacks in.
//!
//! Each agent sees its data under `/srv` (a private bind mount prepared by
//! [`super::spawn::AgentSpawn`]) and calls its service on loopback. The pace and order are
//! pseudo-random from a fixed seed so that recordings are alike but not identical.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Where an agent's data is mounted inside its mount namespace.
pub const DATA_ROOT: &str = "/srv";
/// Records per data set.
const RECORDS: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Scores transactions: reads transaction batches, calls the scoring service, writes alerts.
    Fraud,
    /// Onboards customers: reads applications and customer PII, calls KYC, writes accounts.
    Onboarding,
    /// Reviews: reads reports and policies, hashes evidence, writes a summary, archives it.
    Compliance,
}

impl std::str::FromStr for Profile {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "fraud" => Profile::Fraud,
            "onboarding" => Profile::Onboarding,
            "compliance" => Profile::Compliance,
            _ => bail!("unknown agent profile {s:?} (fraud, onboarding, compliance)"),
        })
    }
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Fraud, Profile::Onboarding, Profile::Compliance];

    pub fn class(self) -> &'static str {
        match self {
            Profile::Fraud => "fraud",
            Profile::Onboarding => "onboarding",
            Profile::Compliance => "compliance",
        }
    }

    /// Runs the agent loop for `duration` against `service` (a [`super::services`] endpoint).
    pub fn run(self, duration: Duration, service: SocketAddr) -> anyhow::Result<()> {
        let root = Path::new(DATA_ROOT);
        let mut rng = Lcg(u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15);
        let start = Instant::now();
        let mut tick: u32 = 0;
        while start.elapsed() < duration {
            let k = rng.below(RECORDS);
            let step = match self {
                Profile::Fraud => fraud(root, tick, k, service),
                Profile::Onboarding => onboarding(root, tick, k, service),
                Profile::Compliance => compliance(root, tick, k, service),
            };
            // Like a real agent, a failed call is reported and the work goes on.
            if let Err(e) = step {
                eprintln!("{} agent: {e:#}", self.class());
            }
            tick = tick.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(30 + u64::from(rng.below(60))));
        }
        Ok(())
    }
}

fn fraud(root: &Path, tick: u32, k: u32, service: SocketAddr) -> anyhow::Result<()> {
    let batch = read(&root.join(format!("transactions/batch-{k:03}.csv")))?;
    // One scoring call per batch, naming how many transactions it carries.
    let txns = batch.lines().skip(1).count();
    call(service, format!("score {txns}\n").as_bytes())?;
    if tick.is_multiple_of(20) {
        append(&root.join("reports/fraud-alerts.log"), "batch flagged\n")?;
    }
    Ok(())
}

fn onboarding(root: &Path, tick: u32, k: u32, service: SocketAddr) -> anyhow::Result<()> {
    read(&root.join(format!("customers/applications/app-{k:03}.json")))?;
    read(&root.join(format!("customers/records/c-{k:03}.json")))?;
    call(service, b"kyc check\n")?;
    fs::write(
        root.join(format!("customers/accounts/acct-{k:03}.json")),
        format!("{{\"customer\":{k},\"status\":\"opened\"}}\n"),
    )?;
    if tick.is_multiple_of(30) {
        dns("kyc.bank.internal")?;
    }
    Ok(())
}

fn compliance(root: &Path, tick: u32, k: u32, service: SocketAddr) -> anyhow::Result<()> {
    for entry in fs::read_dir(root.join("reports"))?.flatten().take(5) {
        read(&entry.path())?;
    }
    read(&root.join(if k.is_multiple_of(2) {
        "policies/aml-policy.txt"
    } else {
        "policies/kyc-policy.txt"
    }))?;
    if tick.is_multiple_of(10) {
        fs::write(
            root.join("reports/compliance-summary.txt"),
            format!("review {tick}: no findings\n"),
        )?;
    }
    if tick.is_multiple_of(25) {
        std::process::Command::new("/usr/bin/sha256sum")
            .arg(root.join("policies/aml-policy.txt"))
            .stdout(std::process::Stdio::null())
            .status()
            .context("running sha256sum")?;
        call(service, b"archive summary\n")?;
    }
    Ok(())
}

/// Writes the data set every profile expects under `dir` (mounted at `/srv` for the agents).
pub fn prepare_data(dir: &Path) -> anyhow::Result<()> {
    for sub in [
        "transactions",
        "customers/applications",
        "customers/accounts",
        "customers/records",
        "reports",
        "policies",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    for k in 0..RECORDS {
        fs::write(
            dir.join(format!("transactions/batch-{k:03}.csv")),
            format!(
                "id,amount,merchant\ntxn-{k}-1,120.00,grocer\ntxn-{k}-2,9400.00,jeweller\ntxn-{k}-3,15.50,cafe\n"
            ),
        )?;
        fs::write(
            dir.join(format!("customers/applications/app-{k:03}.json")),
            format!("{{\"application\":{k},\"product\":\"current-account\"}}\n"),
        )?;
        fs::write(
            dir.join(format!("customers/records/c-{k:03}.json")),
            format!("{{\"customer\":{k},\"name\":\"Customer {k}\",\"dob\":\"1980-01-01\"}}\n"),
        )?;
    }
    fs::write(dir.join("reports/daily.txt"), "daily report\n")?;
    fs::write(dir.join("policies/aml-policy.txt"), "AML policy v3\n")?;
    fs::write(dir.join("policies/kyc-policy.txt"), "KYC policy v7\n")?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    let mut s = String::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(s)
}

fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("appending to {}", path.display()))
}

/// One request/response exchange with a loopback service.
fn call(service: SocketAddr, request: &[u8]) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&service, Duration::from_secs(2))
        .with_context(|| format!("connecting to {service}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(request)?;
    let mut reply = [0u8; 64];
    let _ = s.read(&mut reply)?;
    Ok(())
}

/// A DNS question to the loopback resolver address (nothing needs to answer).
fn dns(name: &str) -> anyhow::Result<()> {
    UdpSocket::bind("127.0.0.1:0")?.send_to(&super::dns_query(name), "127.0.0.1:53")?;
    Ok(())
}

/// A small deterministic generator: the workloads need variety, not statistical quality.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % u64::from(n.max(1))) as u32
    }
}
