//! Where a real process finds the cluster secret, and how `larder up` makes one.
//!
//! Order: a path given in the process's configuration (`cluster_secret_file` in its TOML file,
//! or `--cluster-secret-file`), else the file named by `LARDER_CLUSTER_SECRET_FILE`, else the
//! secret itself in `LARDER_CLUSTER_SECRET`. A server never runs without one: internal
//! traffic is always authenticated ([`larder_transport::auth`]).

use std::path::{Path, PathBuf};

use larder_transport::{ClusterAuth, ClusterKey, ShortSecret};

/// The variable naming a file that holds the cluster secret.
pub const SECRET_FILE_VAR: &str = "LARDER_CLUSTER_SECRET_FILE";
/// The variable holding the cluster secret itself.
pub const SECRET_VAR: &str = "LARDER_CLUSTER_SECRET";
/// The secret file `larder up` writes into its directory.
pub const SECRET_FILE_NAME: &str = "cluster.secret";

/// Why no cluster key could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no cluster secret: set cluster_secret_file in the configuration (or \
         --cluster-secret-file), or {SECRET_FILE_VAR}, or {SECRET_VAR}; `larder up` writes one \
         to <dir>/{SECRET_FILE_NAME}"
    )]
    Missing,
    #[error("reading the cluster secret from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster secret from {origin}: {source}")]
    Short { origin: String, source: ShortSecret },
    #[error("writing the cluster secret to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The cluster key, from `file` if given, else from the environment (see the module doc).
pub fn cluster_key(file: Option<&Path>) -> Result<ClusterKey, SecretError> {
    let from_file = |path: &Path| {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_readable_by_others(path);
        ClusterKey::from_secret(&bytes).map_err(|source| SecretError::Short {
            origin: path.display().to_string(),
            source,
        })
    };
    if let Some(path) = file {
        return from_file(path);
    }
    if let Some(path) = std::env::var_os(SECRET_FILE_VAR) {
        return from_file(Path::new(&path));
    }
    if let Some(secret) = std::env::var_os(SECRET_VAR) {
        return ClusterKey::from_secret(secret.as_encoded_bytes()).map_err(|source| {
            SecretError::Short {
                origin: SECRET_VAR.into(),
                source,
            }
        });
    }
    Err(SecretError::Missing)
}

/// What a process authenticates with: `key`, with handshake nonces from OS randomness.
pub fn process_auth(key: ClusterKey) -> ClusterAuth {
    ClusterAuth::new(key, crate::process_seed())
}

/// Writes a new random secret (256 bits as hex) to `path`, readable by its owner only, unless
/// a file is already there (a restarted `larder up` keeps its cluster's secret); returns the
/// key either way.
pub fn ensure_secret_file(path: &Path) -> Result<ClusterKey, SecretError> {
    if !path.exists() {
        let secret: String = (0..4)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect();
        write_private(path, format!("{secret}\n").as_bytes()).map_err(|source| {
            SecretError::Write {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    cluster_key(Some(path))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the cluster secret file is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_private_and_kept_across_starts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(SECRET_FILE_NAME);
        let first = ensure_secret_file(&path).expect("first");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ensure_secret_file(&path).expect("again");
        assert_eq!(first.fingerprint(), again.fingerprint());
    }

    #[test]
    fn a_short_or_missing_secret_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("dir");
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny\n").expect("write");
        let error = cluster_key(Some(&short)).expect_err("short");
        assert!(error.to_string().contains("at least 16"), "{error}");
        let missing = cluster_key(Some(&dir.path().join("nope"))).expect_err("missing");
        assert!(matches!(missing, SecretError::Read { .. }), "{missing}");
    }
}
