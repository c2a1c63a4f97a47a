//! Polling the config and services files: each poll costs a streamed hash of the file, and the
//! content is read only when it changed (a 10k-Service file is ~2 MB).
//!
//! Must not: parse what it reads (the caller hands the text to `ferrolb_config`).

use std::hash::Hasher;
use std::path::Path;

/// What a watched file held when last read: a fingerprint of the content, not the content (a
/// 10k-Service file is ~2 MB; polling it then costs a streamed hash and no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fingerprint {
    /// Length and two independently seeded 64-bit SipHashes of the bytes.
    Content { len: u64, hash: [u64; 2] },
    /// The read failed with this message.
    Error(String),
}

/// Hashes a byte stream fed in any chunking (`Hasher::write` is a stream).
#[derive(Debug)]
struct ContentHasher {
    len: u64,
    h: [std::hash::DefaultHasher; 2],
}

impl ContentHasher {
    fn new() -> Self {
        let mut h = [
            std::hash::DefaultHasher::new(),
            std::hash::DefaultHasher::new(),
        ];
        h[1].write_u8(1);
        ContentHasher { len: 0, h }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        for h in &mut self.h {
            h.write(bytes);
        }
    }

    fn finish(&self) -> Fingerprint {
        Fingerprint::Content {
            len: self.len,
            hash: [self.h[0].finish(), self.h[1].finish()],
        }
    }
}

fn read_error(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// The fingerprint of `path`'s content, read in 64 KiB pieces.
fn fingerprint_file(path: &Path) -> Fingerprint {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Fingerprint::Error(read_error(path, &e)),
    };
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => return hasher.finish(),
            Ok(n) => hasher.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Fingerprint::Error(read_error(path, &e)),
        }
    }
}

/// A watched file: the fingerprint of its last content.
#[derive(Debug, Default)]
pub struct Watched {
    last: Option<Fingerprint>,
}

impl Watched {
    /// The new content (or read error) when it differs from the last one seen.
    pub fn changed(&mut self, path: &Path) -> Option<Result<String, String>> {
        if self.last.as_ref() == Some(&fingerprint_file(path)) {
            return None;
        }
        let now = std::fs::read_to_string(path).map_err(|e| read_error(path, &e));
        let seen = match &now {
            Ok(text) => {
                let mut h = ContentHasher::new();
                h.write(text.as_bytes());
                h.finish()
            }
            Err(e) => Fingerprint::Error(e.clone()),
        };
        // Compared again: the file may have changed back between the two reads.
        if self.last.as_ref() == Some(&seen) {
            return None;
        }
        self.last = Some(seen);
        Some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn file_fingerprint_does_not_depend_on_read_sizes() {
        let dir = tempfile_dir();
        let path = dir.join("f");
        // Longer than one read buffer, odd length.
        let text: String = (0..30_001).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let mut h = ContentHasher::new();
        for chunk in text.as_bytes().chunks(7) {
            h.write(chunk);
        }
        assert_eq!(fingerprint_file(&path), h.finish());
        let mut other = ContentHasher::new();
        other.write(b"x");
        assert_ne!(other.finish(), h.finish());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn watched_reports_each_change_once() {
        let dir = tempfile_dir();
        let path = dir.join("services.yaml");
        let mut w = Watched::default();
        let first = w.changed(&path).unwrap();
        assert!(first.unwrap_err().contains("services.yaml"));
        assert!(
            w.changed(&path).is_none(),
            "the same error is not reported twice"
        );
        std::fs::write(&path, "a").unwrap();
        assert_eq!(w.changed(&path), Some(Ok("a".to_string())));
        assert!(w.changed(&path).is_none());
        std::fs::write(&path, "b").unwrap();
        assert_eq!(w.changed(&path), Some(Ok("b".to_string())));
        std::fs::write(&path, "b").unwrap();
        assert!(
            w.changed(&path).is_none(),
            "rewritten with the same content"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "ferrolb-standalone-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
