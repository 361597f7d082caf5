//! Signing keys of logs and witnesses, kept in files under the role's data directory.

use std::io::Write;
use std::path::Path;

use xalo_core::Error;

/// Read the secret key string at `path`, or make one with `generate` and store it there,
/// readable by the owner only.
pub fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> Result<String, Error>,
) -> Result<String, Error> {
    if path.exists() {
        return std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| Error::from(e).context(format!("reading {}", path.display())));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::from(e).context(format!("creating {}", dir.display())))?;
    }
    let key = generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::from(e).context(format!("creating {}", path.display())))?;
    file.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::from(e).context(format!("writing {}", path.display())))?;
    Ok(key)
}
