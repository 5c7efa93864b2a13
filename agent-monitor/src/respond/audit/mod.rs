//! Tamper-evident audit log: one signed JSON line per decision, action, release and approval,
//! each chained to the previous one by its SHA-256, with personal identifiers tokenised.
//!
//! - [`entry`]: the entry, its canonical bytes and stored line;
//! - [`keys`]: key files, key ids, `keygen`;
//! - [`token`]: the keyed hash of personal identifiers;
//! - [`writer`]: [`AuditLog`], the appender shared by the daemon and CLI commands;
//! - [`verify`]: verification of a whole log.
//!
//! The format and what verification proves are in docs/AUDIT.md.

pub mod entry;
pub mod error;
pub mod keys;
pub mod token;
pub mod verify;
pub mod writer;

#[cfg(test)]
mod tests;

pub use entry::{EntryBody, GENESIS_PREV, Kind};
pub use error::AuditError;
pub use keys::{KeyFiles, KeyRing, Signer, keygen};
pub use token::Tokenizer;
pub use verify::{
    Expect, FailReason, Verifier, VerifyFailure, VerifyReport, verify_file, verify_reader,
};
pub use writer::{AuditConfig, AuditLog};
