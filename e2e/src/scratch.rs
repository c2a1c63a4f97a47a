//! A scratch directory for one test (`$TMPDIR/flb-<pid>-<tag>`), removed when dropped, with
//! atomic writes so a process polling its files never reads one half-written.
//!
//! Must not: touch anything outside its own directory.

use std::fs;
use std::path::{Path, PathBuf};

/// A scratch directory, removed on drop (also when the test fails).
#[derive(Debug)]
pub struct Dir(PathBuf);

impl Dir {
    /// Creates `$TMPDIR/flb-<pid>-<tag>` empty (removing a leftover of the same name first).
    pub fn new(tag: &str) -> anyhow::Result<Dir> {
        let p = std::env::temp_dir().join(format!("flb-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p)?;
        Ok(Dir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` atomically (a temporary file renamed over it).
    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let tmp = self.0.join(format!(".{name}.tmp"));
        fs::write(&tmp, text)?;
        fs::rename(&tmp, self.0.join(name))?;
        Ok(())
    }

    /// The text of `name`, empty when it cannot be read.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.0.join(name)).unwrap_or_default()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_removes_itself() {
        let dir = Dir::new("scratch-unit").unwrap();
        let path = dir.path().to_path_buf();
        dir.write("a.yaml", "one").unwrap();
        dir.write("a.yaml", "two").unwrap();
        assert_eq!(dir.read("a.yaml"), "two");
        assert_eq!(dir.read("missing"), "");
        assert!(!path.join(".a.yaml.tmp").exists());
        drop(dir);
        assert!(!path.exists());
    }
}
