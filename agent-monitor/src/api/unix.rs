//! The API's Unix socket: created mode 0660 (owner root, group `socket_group`), replacing a
//! stale socket a killed daemon left, never a live one or a file that is not a socket.

use std::{
    io::ErrorKind,
    os::unix::{
        fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
};

use super::ApiError;

/// A bound socket and the inode it was created with (removed at shutdown only if unchanged).
pub struct BoundSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
    ino: u64,
}

pub fn bind(path: &Path, group: Option<&str>) -> Result<BoundSocket, ApiError> {
    let err = |reason: String| ApiError::Socket {
        path: path.to_owned(),
        reason,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(err("exists and is not a socket; not replaced".into()));
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(err(
                    "in use by a running process (another agent-monitor daemon?); set api.socket \
                     to another path"
                        .into(),
                ));
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                log::info!("api: removing the stale socket {}", path.display());
                std::fs::remove_file(path).map_err(|e| err(format!("removing stale: {e}")))?;
            }
            Err(e) => return Err(err(format!("exists and cannot be probed: {e}"))),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let gid = group.map(resolve_group).transpose().map_err(err)?;
    let listener = UnixListener::bind(path).map_err(|e| err(format!("bind: {e}")))?;
    // Until the mode is set the umask's mode applies; connecting needs write permission, which
    // the usual umask gives nobody but root.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(format!("chmod 0660: {e}")))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| err(format!("chown to group {gid}: {e}")))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| err(e.to_string()))?;
    let ino = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .ino();
    Ok(BoundSocket {
        listener,
        path: path.to_owned(),
        ino,
    })
}

fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("socket_group {group:?}: no such group")),
        Err(e) => Err(format!("socket_group {group:?}: {e}")),
    }
}

impl BoundSocket {
    /// Removes the socket file if it is still the one this daemon created.
    pub fn remove(&self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
